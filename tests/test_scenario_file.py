"""Scenario files: the examples, parsed values, every error with its line and field, and fuzzing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pickle
import re
import tomllib
from pathlib import Path
from typing import Any, assert_never, get_type_hints

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from device.battery import BatteryConfig
from device.errors import ConfigError
from device.policy import Durability, RecordingPolicy
from device.tomlfields import Problem, expected
from device.tomllines import Path as KeyPath
from device.tomllines import key_lines
from sim.media import VIDEO_PRESETS, AudioProfile, VideoProfile
from sim.scenario import (
    ACTIONS,
    DEFAULT_EPOCH_UTC,
    Action,
    Categorize,
    ConfigFileError,
    DeviceSpec,
    DoublePress,
    Hold,
    PowerLoss,
    PowerOff,
    PowerOn,
    Press,
    Scenario,
    SetClock,
    Sleep,
    TimelineEntry,
    Wake,
    format_time,
    load_scenario,
    parse_scenario,
    parse_time,
)
from tests.fuzz import mutated, toml_documents

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
DOC = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")

BASE = """\
[scenario]
duration = "01:00:00"

[device]
id = "cam-1"
seed = 1

[[timeline]]
at = "00:00:00"
do = "power_on"

[[timeline]]
at = 60
do = "hold"
reason = "done"
"""
# Lines: 1 [scenario], 2 duration, 4 [device], 5 id, 6 seed, 8 [[timeline]], 9 at, 10 do,
# 12 [[timeline]], 13 at, 14 do, 15 reason.


def _error(text: str) -> str:
    with pytest.raises(ConfigFileError) as caught:
        parse_scenario(text, "x.toml")
    return str(caught.value)


def _recordings(scenario: Scenario) -> list[tuple[float, float]]:
    """(start, end) of each recording the timeline asks for: double_press until a stop."""
    spans, start = [], None
    for entry in scenario.timeline:
        if entry.action == "double_press" and start is None:
            start = entry.at_s
        elif entry.action in ("hold", "power_off", "power_loss") and start is not None:
            spans.append((start, entry.at_s))
            start = None
    return spans


# -- examples -------------------------------------------------------------------------------------


def test_the_examples_are_there() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"quickstart.toml", "shift-10h.toml", "power-loss.toml", "late-activation.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_parses_and_is_documented(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.source == str(path)
    assert scenario.name
    assert scenario.timeline[0].params == PowerOn()
    assert scenario.timeline[-1].params == PowerOff()
    assert [e.at_s for e in scenario.timeline] == sorted(e.at_s for e in scenario.timeline)
    assert f"`{path.name}`" in DOC  # docs/scenarios.md lists every example


def test_quickstart_records_about_two_minutes_with_a_marker_and_a_reason() -> None:
    scenario = load_scenario(ROOT / "examples" / "quickstart.toml")
    assert scenario.duration_s == 600.0
    ((start, end),) = _recordings(scenario)
    assert 100 <= end - start <= 150
    assert any(isinstance(e.params, Press) and start < e.at_s < end for e in scenario.timeline)
    stop = next(e.params for e in scenario.timeline if e.at_s == end)
    assert isinstance(stop, Hold)
    assert stop.reason


def test_shift_records_two_and_a_half_hours_at_the_low_720p_preset() -> None:
    scenario = load_scenario(ROOT / "examples" / "shift-10h.toml")
    assert scenario.duration_s == 10 * 3600.0
    assert scenario.video == VIDEO_PRESETS["720p30-low"]
    spans = _recordings(scenario)
    assert len(spans) >= 3
    assert sum(end - start for start, end in spans) >= 2.5 * 3600
    kinds = {type(entry.params) for entry in scenario.timeline}
    assert {Sleep, Wake, Categorize, Press} <= kinds


def test_power_loss_example_loses_power_while_recording_then_records_again() -> None:
    scenario = load_scenario(ROOT / "examples" / "power-loss.toml")
    actions = [entry.action for entry in scenario.timeline]
    loss = actions.index("power_loss")
    assert actions[loss - 2 : loss] == ["double_press", "press"]
    assert actions[loss + 1 : loss + 3] == ["power_on", "double_press"]
    at_loss = scenario.timeline[loss].at_s
    start = scenario.timeline[actions.index("double_press")].at_s
    pre_roll_start = start - scenario.policy.pre_event_s
    into_segment = (at_loss - pre_roll_start) % scenario.policy.segment_s
    assert 10 < into_segment < scenario.policy.segment_s - 10  # well inside a segment


def test_late_activation_example_starts_recording_before_the_buffer_is_full() -> None:
    scenario = load_scenario(ROOT / "examples" / "late-activation.toml")
    requested = scenario.policy.pre_event_s
    filling_since = None
    late = 0
    for entry in scenario.timeline:
        if entry.action in ("power_on", "wake"):
            filling_since = entry.at_s
        elif entry.action == "double_press":
            assert filling_since is not None
            late += entry.at_s - filling_since < requested
    assert late >= 1


# -- values ---------------------------------------------------------------------------------------

FULL = """\
[scenario]
name = "Everything set"
duration = "10:00:00.25"

[device]
id = "cam-A.1_b"
seed = 18446744
epoch_utc = 2026-11-29T06:00:00-08:00
clock_set = false

[policy]
pre_event_s = 120
pre_event_max_bytes = 100_000_000
audio_in_buffer = true
post_event_s = 15.5
segment_s = 60
max_recording_s = 3600
storage_bytes = 8_000_000_000
storage_reserve_bytes = 0
durability = "segment"
sync_interval_s = 0.5

[media]
video = "1080p30"
fps = 25
gop_frames = 50
i_to_p_ratio = 4.0
size_cv = 0
resolution = "1080p-wide"
bitrate_bps = 9_000_000
audio = false
audio_bitrate_bps = 32000
audio_frame_s = 0.01

[battery]
capacity_h = 10
recording_draw = 1.5
sleep_draw = 0.1
start_percent = 80
low_percent = 15
critical_minutes = 20

[[timeline]]
at = 120.5
do = "hold"

[[timeline]]
at = 0
do = "power_on"

[[timeline]]
at = "00:02:00.5"
do = "press"
note = "second at 120.5: after the hold, in file order"

[[timeline]]
at = 00:01:00
do = "double_press"
source = "dispatch"

[[timeline]]
at = "01:00:00"
do = "categorize"
categories = ["arrest", "use of force"]
case_id = "2026-0001"

[[timeline]]
at = "02:00:00"
do = "set_clock"
utc = 2026-11-29T16:00:00+02:00
source = "gps"

[[timeline]]
at = "10:00:00.25"
do = "power_loss"
"""


def test_every_value_is_read_as_written() -> None:
    scenario = parse_scenario(FULL, "full.toml")
    assert scenario.name == "Everything set"
    assert scenario.duration_s == 36000.25
    assert scenario.source == "full.toml"
    assert scenario.device == DeviceSpec(
        "cam-A.1_b", 18446744, dt.datetime(2026, 11, 29, 14, tzinfo=dt.UTC), clock_set=False
    )
    assert scenario.device.epoch_utc.tzinfo is dt.UTC
    assert scenario.device.clock_source == "unset"
    assert scenario.policy == RecordingPolicy(
        pre_event_s=120.0,
        pre_event_max_bytes=100_000_000,
        audio_in_buffer=True,
        post_event_s=15.5,
        segment_s=60.0,
        max_recording_s=3600.0,
        storage_bytes=8_000_000_000,
        storage_reserve_bytes=0,
        durability=Durability.SEGMENT,
        sync_interval_s=0.5,
    )
    assert type(scenario.policy.pre_event_s) is float  # integers in the file become floats
    assert scenario.video == VideoProfile("1080p-wide", 25.0, 9_000_000, 50, 4.0, 0.0)
    assert scenario.audio == AudioProfile(frame_duration_s=0.01, bitrate_bps=32000, enabled=False)
    assert scenario.battery == BatteryConfig(10.0, 1.5, 0.1, 80.0, 15.0, 20.0)


def test_the_timeline_is_sorted_stably_and_keeps_its_lines() -> None:
    timeline = parse_scenario(FULL, "full.toml").timeline
    assert [(e.at_s, e.action, e.line) for e in timeline] == [
        (0.0, "power_on", 47),
        (60.0, "double_press", 56),
        (120.5, "hold", 43),
        (120.5, "press", 51),
        (3600.0, "categorize", 61),
        (7200.0, "set_clock", 67),
        (36000.25, "power_loss", 73),
    ]
    assert timeline[1].params == DoublePress(source="dispatch")
    assert timeline[2].params == Hold(reason=None)
    assert timeline[4].params == Categorize(("arrest", "use of force"), "2026-0001")
    assert timeline[5].params == SetClock(dt.datetime(2026, 11, 29, 14, tzinfo=dt.UTC), "gps")


def test_defaults() -> None:
    scenario = parse_scenario('[scenario]\nduration = 60\n[device]\nid = "c"\nseed = 0\n')
    assert scenario.name == "scenario"
    assert scenario.device == DeviceSpec("c", 0, DEFAULT_EPOCH_UTC, clock_set=True)
    assert scenario.device.clock_source == "sync"
    assert scenario.policy == RecordingPolicy(durability=Durability.NONE)
    assert scenario.video == VIDEO_PRESETS["720p30"]
    assert scenario.audio == AudioProfile()
    assert scenario.battery == BatteryConfig()
    assert scenario.timeline == ()
    assert parse_scenario(BASE, "dir/my-run.toml").name == "my-run"


def test_the_same_text_gives_equal_scenarios_and_crlf_bom_do_not_matter() -> None:
    first = parse_scenario(FULL, "a.toml")
    assert parse_scenario(FULL, "a.toml") == first
    assert parse_scenario("\ufeff" + FULL.replace("\n", "\r\n"), "a.toml") == first


def test_inline_forms_are_accepted_and_located() -> None:
    text = (
        'scenario = { duration = 600 }\ndevice.id = "c"\ndevice.seed = 3\n'
        "timeline = [\n  { at = 0, do = 'power_on' },\n  { at = 5, do = 'press', nte = 'x' },\n]\n"
    )
    assert _error(text) == (
        "x.toml:6: timeline[1].nte: unknown press parameter 'nte' (did you mean 'note'?); "
        "expected one of at, do, note"
    )
    timeline = parse_scenario(text.replace("nte", "note")).timeline
    assert [(e.action, e.line) for e in timeline] == [("power_on", 5), ("press", 6)]


# -- errors ---------------------------------------------------------------------------------------

ERRORS: list[tuple[str, str, str, str]] = [
    # (case, replace this in BASE, with this, the exact message)
    (
        "syntax",
        "seed = 1",
        "seed = = 1",
        "x.toml:6: invalid TOML: Invalid value (column 8)",
    ),
    (
        "syntax at the end",
        'reason = "done"\n',
        'reason = "done',
        "x.toml:15: invalid TOML: Unterminated string",  # tomllib: "at end of document"
    ),
    (
        "unknown table",
        "[device]",
        "[devcie]",
        (
            "x.toml:4: devcie: unknown table 'devcie' (did you mean 'device'?); expected one of "
            "scenario, device, policy, media, battery, timeline"
        ),
    ),
    (
        "unknown key",
        "seed = 1",
        "seed = 1\nserial = 5",
        (
            "x.toml:7: device.serial: unknown key 'serial'; expected one of id, seed, epoch_utc, "
            "clock_set"
        ),
    ),
    (
        "wrong type: text for a number",
        "[device]",
        '[policy]\nsegment_s = "300"\n\n[device]',
        'x.toml:5: policy.segment_s: must be a number, got text "300"',
    ),
    (
        "wrong type: bool for a number",
        "[device]",
        "[battery]\ncapacity_h = true\n[device]",
        "x.toml:5: battery.capacity_h: must be a number, got true",
    ),
    (
        "wrong type: float for an integer",
        "seed = 1",
        "seed = 1.0",
        "x.toml:6: device.seed: must be an integer, got 1.0",
    ),
    (
        "wrong type: not a table",
        "[scenario]",
        "policy = 5\n[scenario]",
        "x.toml:1: policy: must be a table, got 5",
    ),
    (
        "out of range",
        "[device]",
        "[policy]\npre_event_s = 300\n[device]",
        "x.toml:5: policy.pre_event_s: must be a number from 0.0 to 120.0, got 300",
    ),
    (
        "out of range because of a default",
        "[device]",
        "[policy]\nstorage_bytes = 1000\n[device]",
        (
            "x.toml:4: policy.storage_reserve_bytes: must be an integer from 0 to 1000, "
            "got 268435456 (its default)"
        ),
    ),
    (
        "out of range: media override",
        "[device]",
        '[media]\nvideo = "720p30-low"\nfps = 500\n[device]',
        "x.toml:6: media.fps: must be a number from 1.0 to 120.0, got 500",
    ),
    (
        "out of range: audio key",
        "[device]",
        "[media]\naudio_bitrate_bps = 10\n[device]",
        "x.toml:5: media.audio_bitrate_bps: must be an integer from 6000 to 1000000, got 10",
    ),
    (
        "unknown enum value",
        "[device]",
        '[policy]\ndurability = "always"\n[device]',
        (
            'x.toml:5: policy.durability: must be one of "record", "segment", "none", '
            'got text "always"'
        ),
    ),
    (
        "unknown video preset",
        "[device]",
        '[media]\nvideo = "4k"\n[device]',
        (
            "x.toml:5: media.video: unknown video preset '4k'; expected one of 720p30-low, 720p30, "
            "720p30-high, 1080p30"
        ),
    ),
    (
        "bad time string",
        'at = "00:00:00"',
        'at = "00:61:00"',
        (
            'x.toml:9: timeline[0].at: must be a time "HH:MM:SS[.ffffff]" or a number of seconds, '
            'got text "00:61:00"'
        ),
    ),
    (
        "negative time",
        "at = 60",
        "at = -1",
        (
            'x.toml:13: timeline[1].at: must be a time "HH:MM:SS[.ffffff]" or a number of seconds '
            "(>= 0), got -1"
        ),
    ),
    (
        "bad duration",
        'duration = "01:00:00"',
        "duration = 0",
        "x.toml:2: scenario.duration: must be more than 0 and at most 168:00:00, got 0",
    ),
    (
        "at beyond duration",
        "at = 60",
        'at = "01:00:00.5"',
        "x.toml:13: timeline[1].at: 01:00:00.5 is after the end (scenario.duration 01:00:00)",
    ),
    (
        "unknown action",
        'do = "hold"',
        'do = "xyzzy"',
        (
            "x.toml:14: timeline[1].do: unknown action 'xyzzy'; expected one of power_on, "
            "power_off, power_loss, double_press, hold, press, sleep, wake, categorize, set_clock, "
            "trigger, remote_activate, remote_deactivate, peer_activation, peer_deactivation, "
            "mode, activity, upload, button, input, speed, imu, audio, gps"
        ),
    ),
    (
        "action that is not text",
        'do = "hold"',
        "do = 3",
        (
            "x.toml:14: timeline[1].do: must be an action name, one of power_on, power_off, "
            "power_loss, double_press, hold, press, sleep, wake, categorize, set_clock, "
            "trigger, remote_activate, remote_deactivate, peer_activation, peer_deactivation, "
            "mode, activity, upload, button, input, speed, imu, audio, gps, got 3"
        ),
    ),
    (
        "unknown action parameter",
        'reason = "done"',
        'note = "done"',
        (
            "x.toml:15: timeline[1].note: unknown hold parameter 'note'; expected one of at, do, "
            "reason"
        ),
    ),
    (
        "parameter of an action that takes none",
        'do = "power_on"',
        'do = "power_on"\nforce = true',
        "x.toml:11: timeline[0].force: unknown power_on parameter 'force'; expected one of at, do",
    ),
    (
        "empty text parameter",
        'reason = "done"',
        'reason = ""',
        'x.toml:15: timeline[1].reason: must be text of 1 to 200 characters, got text ""',
    ),
    (
        "bad item in a list parameter",
        'do = "hold"\nreason = "done"',
        'do = "categorize"\ncategories = ["ok", 7]',
        "x.toml:15: timeline[1].categories[1]: must be text of 1 to 200 characters, got 7",
    ),
    (
        "categorize with nothing",
        'do = "hold"\nreason = "done"',
        'do = "categorize"\ncategories = []',
        "x.toml:12: timeline[1]: categorize needs categories, a case_id, or both",
    ),
    (
        "set_clock with a bad source",
        'do = "hold"\nreason = "done"',
        'do = "set_clock"\nutc = 2026-01-01T00:00:00Z\nsource = "ntp"',
        'x.toml:16: timeline[1].source: must be one of "sync", "gps", "manual", got text "ntp"',
    ),
    (
        "missing required field",
        "seed = 1\n",
        "",
        "x.toml:4: device.seed: missing; expected an integer",
    ),
    (
        "missing required table",
        '[device]\nid = "cam-1"\nseed = 1\n',
        "",
        "x.toml:1: device: missing; add a [device] table",
    ),
    (
        "missing duration",
        'duration = "01:00:00"\n',
        'name = "n"\n',
        'x.toml:1: scenario.duration: missing; expected a time such as "08:00:00"',
    ),
    (
        "missing do",
        'do = "hold"\n',
        "",
        (
            "x.toml:12: timeline[1].do: missing; expected one of power_on, power_off, power_loss, "
            "double_press, hold, press, sleep, wake, categorize, set_clock, "
            "trigger, remote_activate, remote_deactivate, peer_activation, peer_deactivation, "
            "mode, activity, upload, button, input, speed, imu, audio, gps"
        ),
    ),
    (
        "missing at",
        "at = 60\n",
        "",
        'x.toml:12: timeline[1].at: missing; expected a time such as "00:05:00"',
    ),
    (
        "bad device id",
        'id = "cam-1"',
        'id = "cam/1"',
        (
            "x.toml:5: device.id: must be 1-64 characters from A-Z a-z 0-9 _ . -, starting with a "
            'letter or digit, got text "cam/1"'
        ),
    ),
    (
        "negative seed",
        "seed = 1",
        "seed = -1",
        "x.toml:6: device.seed: must be an integer from 0 to 9223372036854775807, got -1",
    ),
    (
        "naive datetime",
        "seed = 1",
        "seed = 1\nepoch_utc = 2026-11-29T06:00:00",
        (
            "x.toml:7: device.epoch_utc: must be a date-time with a UTC offset, such as "
            "2026-11-29T06:00:00Z (not quoted), got a local date-time 2026-11-29T06:00:00 "
            "(no UTC offset)"
        ),
    ),
    (
        "quoted datetime",
        "seed = 1",
        'seed = 1\nepoch_utc = "2026-11-29T06:00:00Z"',
        (
            "x.toml:7: device.epoch_utc: must be a date-time with a UTC offset, such as "
            '2026-11-29T06:00:00Z (not quoted), got text "2026-11-29T06:00:00Z"'
        ),
    ),
]


@pytest.mark.parametrize(("case", "old", "new", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_each_error_names_the_file_line_and_field(
    case: str, old: str, new: str, message: str
) -> None:
    assert old in BASE
    assert _error(BASE.replace(old, new, 1)) == message


def test_a_timeline_that_is_not_an_array_of_tables() -> None:
    head = BASE.split("[[timeline]]", maxsplit=1)[0]
    assert (
        _error("timeline = 5\n" + head) == "x.toml:1: timeline: must be [[timeline]] tables, got 5"
    )
    assert (
        _error("timeline = [\n  1,\n]\n" + head) == "x.toml:2: timeline[0]: must be a table, got 1"
    )


def test_scenario_error_is_a_config_error_with_its_parts_and_pickles() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(BASE.replace("seed = 1", "seed = -1"), "x.toml")
    error = caught.value
    assert isinstance(error, ConfigFileError)
    assert (error.source, error.line, error.path) == ("x.toml", 6, "device.seed")
    assert error.reason.startswith("must be an integer")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (str(copy), copy.line) == (str(error), 6)


def test_load_scenario_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigFileError, match=r"nope\.toml: cannot read: No such file") as caught:
        load_scenario(missing)
    assert caught.value.line is None
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[scenario]\nname = "\xff"\n')
    with pytest.raises(ConfigFileError) as caught:
        load_scenario(binary)
    assert str(caught.value) == f"{binary}:2: not UTF-8 text"
    good = tmp_path / "good.toml"
    good.write_text(BASE, encoding="utf-8")
    assert load_scenario(str(good)) == load_scenario(good)


# -- types made in code ---------------------------------------------------------------------------


def test_actions_made_in_code_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"hold\.reason must be text of 1 to 200"):
        Hold(reason="")
    with pytest.raises(ConfigError, match="categorize needs"):
        Categorize()
    with pytest.raises(ConfigError, match=r"set_clock\.utc must be a date-time"):
        SetClock(dt.datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match=r"set_clock\.source must be one of"):
        SetClock(DEFAULT_EPOCH_UTC, "unset")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"TimelineEntry\.action"):
        TimelineEntry(0.0, "power_off", PowerOn(), 1)
    with pytest.raises(ConfigError, match=r"device\.id"):
        DeviceSpec("", 1)


def _dispatch(params: Action) -> str:
    """How a runner dispatches: mypy --strict fails here if an action is not handled."""
    match params:
        case PowerOn() | PowerOff() | PowerLoss() | Sleep() | Wake():
            return params.name
        case DoublePress(source=source):
            return f"start by {source}"
        case Hold(reason=reason):
            return f"stop: {reason}"
        case Press(note=note):
            return f"marker: {note}"
        case Categorize(categories=categories, case_id=case_id):
            return f"categorize {categories} {case_id}"
        case SetClock(utc=utc, source=source):
            return f"clock {utc.isoformat()} from {source}"
        case _:
            assert_never(params)


def test_a_runner_can_match_every_action() -> None:
    scenario = parse_scenario(FULL)
    assert [_dispatch(entry.params) for entry in scenario.timeline][:3] == [
        "power_on",
        "start by dispatch",
        "stop: None",
    ]
    assert {type(entry.params) for entry in scenario.timeline} < set(ACTIONS.values())


def test_a_scenario_made_in_code_must_have_a_sorted_timeline() -> None:
    scenario = parse_scenario(BASE)
    with pytest.raises(ConfigError, match="sorted"):
        dataclasses.replace(scenario, timeline=scenario.timeline[::-1])
    with pytest.raises(ConfigError, match="within the duration"):
        dataclasses.replace(scenario, duration_s=30.0)


def test_every_config_field_is_settable_and_documented() -> None:
    for cls in (RecordingPolicy, BatteryConfig, VideoProfile, AudioProfile):
        for name, hint in get_type_hints(cls).items():
            expected(hint)  # raises TypeError for a type the file format cannot express
            if cls is not AudioProfile:
                assert f"`{name}`" in DOC, f"{cls.__name__}.{name} is not in docs/scenarios.md"
    for name in ("audio", "audio_bitrate_bps", "audio_frame_s"):
        assert f"`{name}`" in DOC
    for name, action in ACTIONS.items():
        assert f"`{name}`" in DOC, f"action {name} is not in docs/scenarios.md"
        for field in dataclasses.fields(action):
            assert f"`{field.name}`" in DOC


# -- times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("00:00:00", 0.0),
        ("1:02:03", 3723.0),
        ("10:00:00.25", 36000.25),
        ("100:00:00.000001", 360000.000001),
        (90, 90.0),
        (0.5, 0.5),
        (dt.time(0, 5, 0, 250000), 300.25),
    ],
)
def test_times(value: object, seconds: float) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "10", "1:2:3", "00:00:60", "00:60:00", "-0:00:01", "00:00:00.1234567", True, []]
)
def test_bad_times(value: object) -> None:
    with pytest.raises(Problem):
        parse_time(value)


@given(st.integers(0, 168 * 3600 * 10**6))
def test_format_time_round_trips(micros: int) -> None:
    seconds = float(f"{micros // 10**6}.{micros % 10**6:06d}")
    assert parse_time(format_time(seconds)) == seconds


# -- line finding ---------------------------------------------------------------------------------

_KEY_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=6
)
_BARE = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)
_STRINGS = st.one_of(
    _KEY_TEXT.map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.just('"""a\n] = #\n"b"""'),
    st.just("'''x\n[t]\n'''"),
    st.just("'lit[#]'"),
)
_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    _STRINGS,
    st.just("1979-05-27 07:32:00Z"),
    st.just("[1, [2, 'a]'], {x = 1}]"),
)


@st.composite
def _toml_documents(draw: st.DrawFn) -> tuple[str, dict[KeyPath, int]]:
    """A document in varied TOML forms, and the line each of its keys and headers is on."""
    lines: list[str] = []
    where: dict[KeyPath, int] = {}

    def emit(path: KeyPath, text: str) -> None:
        where[path] = len(lines) + 1
        lines.extend(text.split("\n"))

    def key(name: str) -> str:
        bare = re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None
        return name if bare and draw(st.booleans()) else json.dumps(name, ensure_ascii=False)

    def body(table: KeyPath) -> None:
        for name in draw(st.lists(st.one_of(_BARE, _KEY_TEXT), max_size=4, unique=True)):
            if draw(st.booleans()):
                lines.append("# a comment = [x]")
            emit((*table, name), f"{key(name)} = {draw(_SCALARS)}  # trailing")

    for name in draw(st.lists(_BARE, max_size=2, unique=True)):
        emit(("root", name), f"root.{key(name)} = {draw(_SCALARS)}")
    for name in draw(st.lists(_BARE, max_size=3, unique=True).filter(lambda n: "root" not in n)):
        if draw(st.booleans()):
            emit((name,), f"[ {key(name)} ]")
            body((name,))
        else:
            for index in range(draw(st.integers(1, 3))):
                emit((name, index), f"[[{key(name)}]]")
                body((name, index))
    return "\n".join(lines) + "\n", where


@given(_toml_documents())
def test_key_lines_finds_every_key_and_header(document: tuple[str, dict[KeyPath, int]]) -> None:
    text, where = document
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        reject()  # a generated key collided with another; rare
    found = key_lines(text)
    for path, line in where.items():
        assert found[path] == line, path


# -- fuzzing: nothing but ConfigFileError ----------------------------------------------------


def _parse_or_scenario_error(text: str) -> None:
    error = None
    try:
        parse_scenario(text, "f.toml")
    except ConfigFileError as caught:
        error = caught
    if error is not None:
        assert error.line is not None
        assert str(error).startswith(f"f.toml:{error.line}: ")
        assert 1 <= error.line <= max(1, len(text.splitlines()))


@given(st.text(max_size=300))
def test_random_text_raises_only_scenario_error(text: str) -> None:
    _parse_or_scenario_error(text)


@given(mutated(EXAMPLES))
def test_mutated_examples_raise_only_scenario_error(text: str) -> None:
    _parse_or_scenario_error(text)


_VALUES = st.one_of(
    st.integers(-5, 10**12).map(str),
    st.floats(-1e3, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["true", "false", "nan", "inf", "-inf", "[]", "{}", '["a", 1]', "[[1]]"]),
    st.sampled_from(['"00:10:00"', '"99:99:99"', '"cam-1"', '""', '"none"', '"720p30-low"']),
    st.sampled_from(["2026-11-29T06:00:00Z", "2026-11-29T06:00:00", "2026-11-29", "06:00:00"]),
    st.sampled_from([f'"{name}"' for name in ACTIONS]),
)
_KEYS = sorted(
    {
        "name", "duration", "id", "seed", "epoch_utc", "clock_set", "video", "audio", "fps",
        "at", "do", "reason", "note", "source", "categories", "case_id", "utc", "bogus",
        *(f.name for f in dataclasses.fields(RecordingPolicy)),
        *(f.name for f in dataclasses.fields(BatteryConfig)),
    }
)  # fmt: skip
_HEADERS = ["[scenario]", "[device]", "[policy]", "[media]", "[battery]", "[[timeline]]", "[x]"]


@given(toml_documents(_HEADERS, _KEYS, _VALUES))
def test_random_toml_documents_raise_only_scenario_error(text: str) -> None:
    _parse_or_scenario_error(text)


def _valid_documents() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**63 - 1),
            "pre_event_s": st.floats(0, 120),
            "segment_s": st.integers(1, 3600),
            "times": st.lists(st.integers(0, 3600 * 10**6), max_size=6),
        }
    ).map(lambda d: (_render(d), d))


def _render(values: dict[str, Any]) -> str:
    entries = "".join(
        f'[[timeline]]\nat = "{format_time(t / 10**6)}"\ndo = "press"\n\n' for t in values["times"]
    )
    return (
        '[scenario]\nduration = "01:00:00"\n[device]\nid = "d"\n'
        f"seed = {values['seed']}\n[policy]\npre_event_s = {values['pre_event_s']!r}\n"
        f"segment_s = {values['segment_s']}\n\n{entries}"
    )


@given(_valid_documents())
def test_generated_valid_documents_read_back(document: tuple[str, dict[str, Any]]) -> None:
    text, values = document
    scenario = parse_scenario(text)
    assert scenario.device.seed == values["seed"]
    assert scenario.policy.pre_event_s == values["pre_event_s"]
    assert scenario.policy.segment_s == values["segment_s"]
    first_line = text.splitlines().index("[[timeline]]") + 1 if values["times"] else 0
    in_file = [(t / 10**6, first_line + 4 * i) for i, t in enumerate(values["times"])]
    in_time = sorted(in_file, key=lambda pair: pair[0])  # stable: file order among equal times
    assert [(entry.at_s, entry.line) for entry in scenario.timeline] == in_time
