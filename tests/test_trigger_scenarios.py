"""One scenario per trigger kind and per stop rule, through the real inputs where there are any.

Each case is a scenario timeline run in virtual time: button edges with contact bounce go through
the gesture recognizer, input lines through debouncing, IMU episodes, audio clips and GPS routes
through the detectors. Each asserts the decisions in the audit log, in order, ignored and refused
ones included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim.runner import ScenarioRun
from sim.scenario import parse_scenario

HEADER = """
[scenario]
duration = "00:03:00"
[device]
id = "cam-t"
seed = 11
[media]
video = "720p30-low"
bitrate_bps = 200000
audio = false
[policy]
pre_event_s = 5
{policy}
[[timeline]]
at = 0
do = "power_on"
"""

FENCE = """
[[policy.geofences]]
name = "courthouse"
polygon = [[40.0, -75.0], [40.0, -74.998], [40.002, -74.998], [40.002, -75.0]]
[policy.triggers.geofence]
enabled = true
"""

Expected = tuple[str, str | None, str]
"""(request, act, trigger kind) of a ``trigger`` audit record."""


def step(at: float, do: str, **params: object) -> str:
    lines = [f"[[timeline]]\nat = {at}\ndo = {json.dumps(do)}"]
    for key, value in params.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines)


def run(tmp_path: Path, steps: list[str], policy: str = "") -> list[dict[str, Any]]:
    text = HEADER.format(policy=policy) + "\n".join(steps)
    scenario = parse_scenario(text, "case.toml")
    ScenarioRun(scenario, tmp_path / "out").run()
    lines = (tmp_path / "out" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def decisions(records: list[dict[str, Any]]) -> list[Expected]:
    return [(r["request"], r.get("act"), r["trigger"]) for r in records if r["kind"] == "trigger"]


START_CASES = {
    "button": ([step(20, "button", gesture="double_press")], "", "button"),
    "holster": ([step(20, "input", line="holster")], "", "holster"),
    "vehicle_lightbar": ([step(20, "input", line="lightbar")], "", "vehicle_lightbar"),
    "vehicle_siren": ([step(20, "input", line="siren")], "", "vehicle_siren"),
    "vehicle_door": (
        [step(20, "input", line="door")],
        "[policy.triggers.vehicle_door]\nenabled = true",
        "vehicle_door",
    ),
    "vehicle_speed": (
        [step(20, "speed", kmh=130)],
        "[policy.triggers.vehicle_speed]\nenabled = true",
        "vehicle_speed",
    ),
    "taser_armed": ([step(20, "input", line="taser_armed")], "", "taser_armed"),
    "taser_trigger": ([step(20, "trigger", kind="taser_trigger")], "", "taser_trigger"),
    "taser_arc": ([step(20, "trigger", kind="taser_arc")], "", "taser_arc"),
    "gunshot": ([step(20, "audio", clip="gunshot")], "", "gunshot"),
    "foot_pursuit": ([step(20, "imu", episode="running")], "", "foot_pursuit"),
    "officer_down": ([step(20, "imu", episode="fall")], "", "officer_down"),
    "geofence": (
        [step(20, "gps", route=[[39.999, -74.999], [40.001, -74.999]], speed_mps=5)],
        FENCE,
        "geofence",
    ),
    "remote": ([step(20, "remote_activate")], "", "remote"),
    "peer": ([step(20, "peer_activation", peer="cam-2")], "", "peer"),
}


@pytest.mark.parametrize("case", START_CASES)
def test_each_trigger_kind_starts_a_recording(tmp_path: Path, case: str) -> None:
    steps, policy, kind = START_CASES[case]
    records = run(tmp_path, steps, policy)
    assert decisions(records)[0] == ("activate", "start", kind)
    (started,) = [r for r in records if r["kind"] == "recording_started"]
    assert started["trigger"] == kind


def test_sleep_mode_ignores_a_holster_draw(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [step(10, "mode", mode="sleep"), step(20, "input", line="holster")],
    )
    assert decisions(records) == [("activate", "ignore", "holster")]
    (ignored,) = [r for r in records if r["kind"] == "trigger"]
    assert ignored["decision"] == "sleep mode: triggers are ignored"
    assert not [r for r in records if r["kind"] == "recording_started"]


def test_a_disabled_trigger_is_ignored(tmp_path: Path) -> None:
    records = run(tmp_path, [step(20, "input", line="door")])
    (ignored,) = [r for r in records if r["kind"] == "trigger"]
    assert (ignored["act"], ignored["decision"]) == (
        "ignore",
        "trigger vehicle_door is disabled by policy",
    )


def test_debounce_and_line_glitches_are_audited(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            step(20, "input", line="lightbar", glitch_s=0.01),  # a 10 ms spike: filtered
            step(30, "trigger", kind="gunshot"),
            step(30.5, "trigger", kind="gunshot"),  # within debounce_s 2
        ],
    )
    glitch = next(r for r in records if r["kind"] == "input_ignored")
    assert glitch["input"] == "lightbar"
    assert glitch["reason"].startswith("glitch")
    assert decisions(records) == [
        ("activate", "start", "gunshot"),
        ("activate", "ignore", "gunshot"),
    ]
    debounced = [r for r in records if r["kind"] == "trigger"][-1]
    assert debounced["decision"].startswith("debounce: gunshot fired 0.500 s ago")


def test_contact_bounce_is_filtered_and_the_gesture_recognised(tmp_path: Path) -> None:
    records = run(tmp_path, [step(20, "button", gesture="double_press")])
    assert any(r["kind"] == "input_ignored" and r["reason"] == "contact bounce" for r in records)
    assert decisions(records) == [("activate", "start", "button")]


def test_door_slams_and_walking_trigger_nothing(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [step(20, "audio", clip="door_slam"), step(30, "imu", episode="walking")],
    )
    assert decisions(records) == []


# -- stop rules -----------------------------------------------------------------------------------


def test_an_automatic_recording_stops_on_a_confirmed_hold(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            step(20, "input", line="holster"),
            step(60, "button", gesture="hold", reason="subject detained"),
            step(66, "button", gesture="press"),
        ],
    )
    assert decisions(records) == [
        ("activate", "start", "holster"),
        ("deactivate", "confirm", "button"),
        ("confirm_stop", "stop", "button"),
    ]
    stopped = next(r for r in records if r["kind"] == "recording_stopped")
    assert stopped["reason"] == "subject detained"


def test_an_unconfirmed_stop_lapses(tmp_path: Path) -> None:
    records = run(tmp_path, [step(20, "input", line="siren"), step(60, "button", gesture="hold")])
    assert decisions(records) == [
        ("activate", "start", "vehicle_siren"),
        ("deactivate", "confirm", "button"),
        ("confirm_stop", "refuse", "button"),
    ]


def test_a_gunshot_activation_is_cancelled_within_its_window(tmp_path: Path) -> None:
    records = run(tmp_path, [step(20, "audio", clip="gunshot"), step(30, "button", gesture="hold")])
    assert decisions(records) == [
        ("activate", "start", "gunshot"),
        ("deactivate", "cancel", "button"),
    ]
    states = [r["state"] for r in records if r["kind"] == "state"]
    assert states[-3:] == ["recording", "buffering", "off"]  # off: the scenario's end


def test_remote_stop_of_a_local_recording_is_refused(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            step(20, "button", gesture="double_press"),
            step(60, "remote_deactivate", reason="dispatch: clear"),
        ],
    )
    assert decisions(records) == [
        ("activate", "start", "button"),
        ("deactivate", "refuse", "remote"),
    ]


def test_remote_stop_waits_for_active_triggers(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            step(20, "input", line="siren"),
            step(30, "input", line="holster"),
            step(60, "remote_deactivate", reason="dispatch: clear"),
            step(70, "input", line="siren", level=False),
            step(80, "remote_deactivate", reason="dispatch: clear"),
        ],
    )
    assert decisions(records) == [
        ("activate", "start", "vehicle_siren"),
        ("activate", "note", "holster"),
        ("deactivate", "refuse", "remote"),
        ("release", None, "vehicle_siren"),
        ("deactivate", "stop", "remote"),
    ]


def test_only_the_group_master_stops_a_group_recording(tmp_path: Path) -> None:
    records = run(
        tmp_path,
        [
            step(20, "peer_activation", peer="cam-2"),
            step(40, "button", gesture="hold", reason="leaving"),
            step(50, "peer_deactivation", peer="cam-3"),
            step(60, "peer_deactivation", peer="cam-2", reason="scene clear"),
        ],
    )
    assert decisions(records) == [
        ("activate", "start", "peer"),
        ("deactivate", "refuse", "button"),
        ("deactivate", "refuse", "peer"),
        ("deactivate", "stop", "peer"),
    ]


def test_a_peer_out_of_range_is_ignored(tmp_path: Path) -> None:
    records = run(tmp_path, [step(20, "peer_activation", peer="cam-2", distance_m=25)])
    (ignored,) = [r for r in records if r["kind"] == "trigger"]
    assert ignored["decision"] == "peer cam-2 is out of range (25.0 m > range_m 9.1)"


def test_the_triggers_tour_example_decides_as_documented(tmp_path: Path) -> None:
    from sim.scenario import load_scenario

    examples = Path(__file__).resolve().parent.parent / "examples"
    ScenarioRun(load_scenario(examples / "triggers-tour.toml"), tmp_path / "out").run()
    lines = (tmp_path / "out" / "audit.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert decisions(records) == [
        ("activate", "start", "button"),
        ("deactivate", "stop", "button"),
        ("activate", "start", "officer_down"),
        ("activate", "note", "gunshot"),
        ("activate", "note", "foot_pursuit"),
        ("release", None, "foot_pursuit"),
        ("activate", "note", "holster"),
        ("release", None, "holster"),
        ("deactivate", "confirm", "button"),
        ("confirm_stop", "stop", "button"),
        ("activate", "start", "vehicle_siren"),
        ("deactivate", "refuse", "remote"),
        ("release", None, "vehicle_siren"),
        ("deactivate", "stop", "remote"),
        ("activate", "start", "gunshot"),
        ("deactivate", "cancel", "button"),
        ("activate", "start", "geofence"),
        ("deactivate", "confirm", "button"),
        ("confirm_stop", "stop", "button"),
        ("activate", "start", "peer"),
        ("deactivate", "refuse", "button"),
        ("deactivate", "stop", "peer"),
        ("activate", "ignore", "holster"),
    ]
    glitches = [r for r in records if r["kind"] == "input_ignored" and r["input"] == "lightbar"]
    assert len(glitches) == 1
    assert {r["detector"] for r in records if r["kind"] == "detection"} == {
        "officer_down",
        "gunshot",
        "foot_pursuit",
        "geofence",
    }
