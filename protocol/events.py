"""Events a device publishes on its ``event`` topic.

Every event carries an ``id`` unique per device and a per-device ``seq`` that grows by one; events
produced while offline are journaled and replayed in order, so a receiver drops duplicates by
``id`` and spots gaps by ``seq``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.common import DeviceMessage, NonNegativeInt, Trigger
from protocol.ids import SafeId
from protocol.vocabulary import FaultSeverity, Label, Mode, ShortText

FaultCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}\Z")]


class Event(DeviceMessage, frozen=True, kw_only=True):
    """Common fields of every event."""

    id: SafeId
    seq: NonNegativeInt


class Activation(Event, frozen=True, kw_only=True, tag="activation"):
    """A recording started."""

    recording: SafeId
    trigger: Trigger
    requested_pre_roll_s: float
    delivered_pre_roll_s: float


class Deactivation(Event, frozen=True, kw_only=True, tag="deactivation"):
    """A recording stopped; ``reason`` is the stated reason, absent if none was given."""

    recording: SafeId
    trigger: Trigger
    reason: Label | None = None


class Marker(Event, frozen=True, kw_only=True, tag="marker"):
    """A bookmark placed in a recording."""

    recording: SafeId
    source: Label
    note: Label | None = None


class ModeChange(Event, frozen=True, kw_only=True, tag="mode_change"):
    """A mode was switched on or off."""

    mode: Mode
    enabled: bool
    source: Label


class Fault(Event, frozen=True, kw_only=True, tag="fault"):
    """Something went wrong, or a threshold was crossed (storage full, battery low)."""

    code: FaultCode
    severity: FaultSeverity
    message: ShortText


AnyEvent = Activation | Deactivation | Marker | ModeChange | Fault
