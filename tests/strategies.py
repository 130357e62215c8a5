"""Hypothesis strategies for valid protocol values."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import get_args

from hypothesis import strategies as st

from protocol.commands import (
    Activate,
    CommandError,
    Deactivate,
    ErrorCode,
    Ping,
    Reply,
    SetConfig,
    SetMarker,
    SetMode,
)
from protocol.common import Trigger
from protocol.events import Activation, Deactivation, Fault, Marker, ModeChange
from protocol.messages import (
    Battery,
    Clock,
    PeerActivation,
    PeerDeactivation,
    Status,
    Storage,
    Telemetry,
    UploadQueue,
)
from protocol.vocabulary import (
    ClockSource,
    DeviceState,
    FaultSeverity,
    Mode,
    TriggerKind,
)

_ID_FIRST = string.ascii_letters + string.digits
_ID_REST = _ID_FIRST + "_.-"

safe_ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_ID_FIRST),
    st.text(_ID_REST, max_size=63),
)
labels = st.text(min_size=1, max_size=200)
short_texts = st.text(max_size=1000)
utc_times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(UTC),
)
small_ints = st.integers(min_value=0, max_value=2**53)
finite_floats = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)
percents = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
config_values = st.one_of(
    st.text(max_size=50),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def literal(alias: object) -> st.SearchStrategy[str]:
    """Any value of a ``Literal`` alias."""
    return st.sampled_from(get_args(alias))


triggers = st.builds(
    Trigger,
    kind=literal(TriggerKind),
    source=labels,
    hw_time_ms=st.none() | st.integers(min_value=0, max_value=2**32 - 1),
)

_event_common = {"ts": utc_times, "device": safe_ids, "id": safe_ids, "seq": small_ints}

events = st.one_of(
    st.builds(
        Activation,
        **_event_common,
        recording=safe_ids,
        trigger=triggers,
        requested_pre_roll_s=finite_floats,
        delivered_pre_roll_s=finite_floats,
    ),
    st.builds(
        Deactivation,
        **_event_common,
        recording=safe_ids,
        trigger=triggers,
        reason=st.none() | labels,
    ),
    st.builds(Marker, **_event_common, recording=safe_ids, source=labels, note=st.none() | labels),
    st.builds(
        ModeChange, **_event_common, mode=literal(Mode), enabled=st.booleans(), source=labels
    ),
    st.builds(
        Fault,
        **_event_common,
        code=st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z"),
        severity=literal(FaultSeverity),
        message=short_texts,
    ),
)

_command_common = {"ts": utc_times, "id": safe_ids, "sender": safe_ids}

commands = st.one_of(
    st.builds(Activate, **_command_common, reason=st.none() | labels),
    st.builds(Deactivate, **_command_common, reason=labels),
    st.builds(SetMarker, **_command_common, note=st.none() | labels),
    st.builds(SetMode, **_command_common, mode=literal(Mode), enabled=st.booleans()),
    st.builds(
        SetConfig,
        **_command_common,
        values=st.dictionaries(
            st.from_regex(r"\A[a-z][a-z0-9_.]{0,30}\Z"), config_values, min_size=1, max_size=8
        ),
    ),
    st.builds(Ping, **_command_common),
)

replies = st.one_of(
    st.builds(
        Reply,
        ts=utc_times,
        device=safe_ids,
        id=safe_ids,
        ok=st.just(value=True),
        result=st.none() | st.dictionaries(st.text(max_size=20), st.none() | config_values),
    ),
    st.builds(
        Reply,
        ts=utc_times,
        device=safe_ids,
        id=safe_ids,
        ok=st.just(value=False),
        error=st.builds(CommandError, code=literal(ErrorCode), message=short_texts),
    ),
)

statuses = st.builds(
    Status,
    ts=utc_times,
    device=safe_ids,
    online=st.booleans(),
    reason=st.sampled_from(["connected", "shutdown", "connection_lost"]),
    boot_id=safe_ids,
    firmware=labels,
)

telemetry = st.builds(
    Telemetry,
    ts=utc_times,
    device=safe_ids,
    state=literal(DeviceState),
    modes=st.lists(literal(Mode), unique=True).map(tuple),
    recording=st.none() | safe_ids,
    battery=st.builds(
        Battery,
        percent=percents,
        charging=st.booleans(),
        minutes_left=st.none() | finite_floats,
    ),
    storage=st.builds(
        Storage,
        used_bytes=small_ints,
        capacity_bytes=small_ints,
        segments=small_ints,
        full=st.booleans(),
    ),
    upload=st.builds(
        UploadQueue,
        pending_segments=small_ints,
        pending_bytes=small_ints,
        current=st.none() | safe_ids,
        current_committed_bytes=small_ints,
        current_size_bytes=small_ints,
        verified_segments=small_ints,
        verified_bytes=small_ints,
    ),
    clock=st.builds(
        Clock,
        set=st.booleans(),
        source=literal(ClockSource),
        last_sync_utc=st.none() | utc_times,
    ),
    counters=st.dictionaries(safe_ids, small_ints, max_size=5),
)

peer_activations = st.builds(
    PeerActivation,
    ts=utc_times,
    device=safe_ids,
    recording=safe_ids,
    trigger=triggers,
    master=st.booleans(),
    position=st.none()
    | st.tuples(
        st.floats(min_value=-90, max_value=90, allow_nan=False),
        st.floats(min_value=-180, max_value=180, allow_nan=False),
    ),
)

peer_deactivations = st.builds(
    PeerDeactivation,
    ts=utc_times,
    device=safe_ids,
    recording=safe_ids,
    reason=st.none() | labels,
)
any_message = st.one_of(
    statuses, telemetry, events, commands, replies, peer_activations, peer_deactivations
)
