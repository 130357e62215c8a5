"""Fleet scenarios: several cameras on one virtual clock, activating as a group.

Parsing (good and bad, with the line and field), the example's decisions per camera read from the
audit logs, the report and the command line, determinism, a single-camera file unchanged, the
lazy media feed against an eager one (byte for byte, and the buffers it holds), and the range rule
over random positions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from device.errors import ConfigError
from device.peers import distance_m
from sim.cli import main
from sim.feed import FeedOptions
from sim.fleet_report import build_fleet_report
from sim.fleet_run import FleetRun, fleet_feed
from sim.fleet_spec import Fleet, FleetDevice, camera_seed, spread
from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import (
    ConfigFileError,
    Scenario,
    TimelineEntry,
    load_scenario,
    parse_scenario,
)
from sim.scenario_timeline import PowerOn

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fleet-group.toml"
SINGLE_REPORT_KEYS = {
    "scenario",
    "device",
    "seed",
    "duration_s",
    "key_id",
    "policy",
    "recordings",
    "activities",
    "compliance",
    "totals",
}

SMALL = """\
[scenario]
name = "small fleet"
duration = "00:01:30"

[device]
seed = 9
epoch_utc = 2026-11-29T14:00:00Z

[fleet]
{fleet}

[policy]
pre_event_s = 5
{policy}

[media]
video = "720p30-low"
bitrate_bps = 200000
audio = false

[[timeline]]
at = 0
do = "power_on"
{steps}
"""
# Lines: 1 [scenario], 5 [device], 9 [fleet], 10 the first line of {fleet}.

GROUP3 = 'count = 3\ngroup = "g"\npositions = [[40.0, -75.0], [40.00003, -75.0], [40.001, -75.0]]'
"""cam-002 is 3.3 m from cam-001, cam-003 is 111 m away."""


def fleet_text(fleet: str = GROUP3, steps: str = "", policy: str = "") -> str:
    return SMALL.format(fleet=fleet, steps=steps, policy=policy)


def step(at: float, do: str, camera: object = None, **params: object) -> str:
    lines = ["", "[[timeline]]", f"at = {at}", f"do = {json.dumps(do)}"]
    if camera is not None:
        lines.append(f"camera = {json.dumps(camera)}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in params.items()]
    return "\n".join(lines)


def play(tmp: Path, text: str) -> FleetRun:
    fleet = FleetRun(parse_scenario(text, "fleet.toml"), tmp)
    fleet.run()
    return fleet


def triggers(root: Path, camera: str) -> list[tuple[str, str | None, str, str]]:
    """(request, act, trigger kind, source) of every trigger record in a camera's audit log."""
    lines = (root / camera / "audit.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [
        (r["request"], r.get("act"), r["trigger"], r["source"])
        for r in records
        if r["kind"] == "trigger"
    ]


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- parsing --------------------------------------------------------------------------------------


def test_the_example_parses_into_four_cameras_with_targets() -> None:
    scenario = load_scenario(EXAMPLE)
    fleet = scenario.fleet
    assert fleet is not None
    assert fleet.ids == ("cam-001", "cam-002", "cam-003", "cam-004")
    assert fleet.group == "unit-12"
    assert fleet.cameras[1].position == (39.95003, -75.16503)
    assert scenario.device.id == "cam-001"  # the first camera's; the seed is the root seed
    assert scenario.device.seed == 21
    assert [c.seed for c in fleet.cameras] == [camera_seed(21, c.id) for c in fleet.cameras]
    assert len({c.seed for c in fleet.cameras}) == 4
    by_line = {entry.line: entry.cameras for entry in scenario.timeline}
    assert scenario.timeline[0].cameras is None  # power_on: every camera
    assert ("cam-001", "cam-002", "cam-003") in by_line.values()  # camera = [1, 2, 3]
    assert ("cam-004",) in by_line.values()


def test_camera_scenarios_split_the_timeline() -> None:
    scenario = load_scenario(EXAMPLE)
    singles = scenario.camera_scenarios()
    assert [s.device.id for s in singles] == ["cam-001", "cam-002", "cam-003", "cam-004"]
    assert all(s.fleet is None and s.policy == scenario.policy for s in singles)
    assert all(e.cameras is None for s in singles for e in s.timeline)
    actions = {s.device.id: [e.action for e in s.timeline] for s in singles}
    assert actions["cam-002"] == ["power_on", "activity", "hold", "categorize", "power_off"]
    assert actions["cam-004"] == ["power_on", "double_press", "hold", "power_off"]
    assert singles[2].device.seed == camera_seed(21, "cam-003")


def test_ids_from_a_prefix_and_explicit_ids() -> None:
    made = parse_scenario(fleet_text('count = 12\nid_prefix = "unit7-"')).fleet
    assert made is not None
    assert made.ids[0] == "unit7-001"
    assert made.ids[-1] == "unit7-012"
    assert made.group is None
    assert made.cameras[0].position is None
    named = parse_scenario(fleet_text('ids = ["alpha", "bravo"]\ncount = 2'), "f.toml")
    assert named.fleet is not None
    assert named.fleet.ids == ("alpha", "bravo")
    wide = parse_scenario(fleet_text("count = 1000")).fleet
    assert wide is not None
    assert wide.ids[-1] == "cam-1000"


def test_targets_by_id_number_and_array() -> None:
    steps = step(10, "press", "cam-002") + step(11, "press", 3) + step(12, "press", [3, "cam-001"])
    timeline = parse_scenario(fleet_text(steps=steps)).timeline
    assert [e.cameras for e in timeline] == [
        None,
        ("cam-002",),
        ("cam-003",),
        ("cam-003", "cam-001"),
    ]


def test_a_spread_is_seeded_and_within_its_radius() -> None:
    text = fleet_text("count = 50\ncenter = [51.5, -0.12]\nradius_m = 30")
    first, again = parse_scenario(text).fleet, parse_scenario(text).fleet
    assert first is not None
    assert first == again
    for camera in first.cameras:
        assert camera.position is not None
        assert distance_m((51.5, -0.12), camera.position) == pytest.approx(15, abs=15.01)
    other = parse_scenario(text.replace("seed = 9", "seed = 10")).fleet
    assert other is not None
    assert other.cameras[0].position != first.cameras[0].position
    assert spread((0.0, 179.9999), 50.0, 20, 1) == spread((0.0, 179.9999), 50.0, 20, 1)
    assert all(-180 <= lon < 180 for _, lon in spread((0.0, 179.9999), 50.0, 20, 1))


BAD: list[tuple[str, str, str, str]] = [
    # (case, the [fleet] table, a timeline step, the exact message)
    (
        "unknown camera",
        "count = 4",
        step(10, "press", "cam-009"),
        (
            "f.toml:28: timeline[1].camera: unknown camera 'cam-009' (did you mean 'cam-004'?); "
            "expected a camera ID of the fleet (cam-001, cam-002, cam-003, cam-004) or its number "
            "from 1 to 4"
        ),
    ),
    (
        "camera number out of range",
        "count = 2",
        step(10, "press", 3),
        (
            "f.toml:28: timeline[1].camera: camera number 3 is out of range; expected a camera "
            "ID of the fleet (cam-001, cam-002) or its number from 1 to 2"
        ),
    ),
    (
        "camera of the wrong type",
        "count = 2",
        step(10, "press", camera=True),
        (
            "f.toml:28: timeline[1].camera: must be a camera ID of the fleet (cam-001, cam-002) or "
            "its number from 1 to 2, or an array of them, got true"
        ),
    ),
    (
        "no camera",
        "count = 2",
        step(10, "press", []),
        "f.toml:28: timeline[1].camera: must name at least one camera, got an empty array",
    ),
    (
        "a camera twice",
        "count = 2",
        step(10, "press", [1, "cam-001"]),
        "f.toml:28: timeline[1].camera[1]: names camera 'cam-001' twice",
    ),
    (
        "duplicate ids",
        'ids = ["a", "b", "a"]',
        "",
        "f.toml:10: fleet.ids: has 'a' twice: every camera needs its own ID",
    ),
    (
        "a bad id",
        'ids = ["a", "b c"]',
        "",
        (
            "f.toml:10: fleet.ids: has 'b c', which is not an ID of 1-64 characters from A-Z a-z "
            "0-9 _ . -, starting with a letter or digit"
        ),
    ),
    (
        "a prefix that makes bad ids",
        'count = 2\nid_prefix = "-x"',
        "",
        (
            "f.toml:11: fleet.id_prefix: makes '-x001', which is not an ID of 1-64 characters from "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit"
        ),
    ),
    (
        "count zero",
        "count = 0",
        "",
        "f.toml:10: fleet.count: must be an integer from 1 to 1000, got 0",
    ),
    (
        "count too high",
        "count = 1001",
        "",
        "f.toml:10: fleet.count: must be an integer from 1 to 1000, got 1001",
    ),
    (
        "count and ids disagree",
        'count = 3\nids = ["a", "b"]',
        "",
        "f.toml:10: fleet.count: does not match ids: 3 counted, 2 named",
    ),
    (
        "no count",
        'group = "g"',
        "",
        "f.toml:9: fleet: missing count; expected count (1 to 1000) or ids",
    ),
    (
        "positions of the wrong length",
        "count = 3\npositions = [[40.0, -75.0], [40.0, -75.0]]",
        "",
        "f.toml:11: fleet.positions: has 2 items; expected one per camera (3)",
    ),
    (
        "a position off the globe",
        "count = 2\npositions = [[40.0, -75.0], [91.0, -75.0]]",
        "",
        (
            "f.toml:11: fleet.positions: item 2 ([91.0, -75.0]) is not [latitude -90 to 90, "
            "longitude -180 to 180]"
        ),
    ),
    (
        "a position that is not a pair",
        "count = 2\npositions = [[40.0, -75.0], [40.0]]",
        "",
        "f.toml:11: fleet.positions[1]: must be an array of 2 of a number, got 1 items",
    ),
    (
        "positions and a spread",
        "count = 1\npositions = [[40.0, -75.0]]\ncenter = [40.0, -75.0]",
        "",
        "f.toml:11: fleet.positions: places every camera: leave out center/radius_m",
    ),
    (
        "a radius without a center",
        "count = 2\nradius_m = 20",
        "",
        "f.toml:11: fleet.radius_m: spreads cameras around a center: add fleet.center",
    ),
    (
        "a bad group",
        'count = 2\ngroup = "unit 12"',
        "",
        (
            "f.toml:11: fleet.group: must be 1-64 characters from A-Z a-z 0-9 _ . -, starting "
            'with a letter or digit, got text "unit 12"'
        ),
    ),
    (
        "an unknown key",
        "count = 2\ngroop = 1",
        "",
        (
            "f.toml:11: fleet.groop: unknown key 'groop' (did you mean 'group'?); expected one of "
            "count, ids, id_prefix, group, positions, center, radius_m"
        ),
    ),
]


@pytest.mark.parametrize(("case", "fleet", "steps", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_fleets_name_the_line_and_field(
    case: str, fleet: str, steps: str, message: str
) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_scenario(fleet_text(fleet, steps), "f.toml")
    assert str(caught.value) == message, case


def test_device_id_and_camera_keys_belong_to_their_kind_of_scenario() -> None:
    text = fleet_text("count = 2").replace("seed = 9", 'seed = 9\nid = "x"')
    with pytest.raises(ConfigFileError, match=r"f\.toml:7: device\.id: a fleet scenario names"):
        parse_scenario(text, "f.toml")
    single = '[scenario]\nduration = 60\n[device]\nid = "x"\nseed = 1\n' + step(0, "power_on", 1)
    with pytest.raises(ConfigFileError, match=r"f\.toml:10: timeline\[0\]\.camera: only the"):
        parse_scenario(single, "f.toml")
    typo = fleet_text().replace("[fleet]", "[flet]")
    with pytest.raises(ConfigFileError, match=r"did you mean 'fleet'\?"):
        parse_scenario(typo, "f.toml")


def test_fleets_made_in_code_are_validated() -> None:
    with pytest.raises(ConfigError, match="twice"):
        Fleet((FleetDevice("a", 1), FleetDevice("a", 2)))
    with pytest.raises(ConfigError, match="1 to 1000 cameras"):
        Fleet(())
    with pytest.raises(ConfigError, match="position"):
        FleetDevice("a", 1, (100.0, 0.0))
    with pytest.raises(ConfigError, match="names no camera"):
        TimelineEntry(0.0, "power_on", PowerOn(), 1, ())
    scenario = parse_scenario(fleet_text(steps=step(5, "press", 2)))
    with pytest.raises(ConfigError, match="not in the fleet"):
        dataclasses.replace(scenario, fleet=None)


# -- the example ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fleet") / "out"
    return out, _cli_json(["scenario", str(EXAMPLE), "--out", str(out), "--json"])


def _cli_json(argv: list[str]) -> dict[str, Any]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    report: dict[str, Any] = json.loads(buffer.getvalue())
    return report


def test_the_example_decides_per_camera_as_documented(example: tuple[Path, dict[str, Any]]) -> None:
    out, _ = example
    assert triggers(out, "cam-001") == [
        ("activate", "start", "holster", "input:holster"),
        ("activate", "ignore", "peer", "peer:cam-004"),  # out of range
        ("deactivate", "refuse", "peer", "peer:cam-004"),  # not a group recording
        ("release", None, "holster", "input:holster"),
        ("deactivate", "confirm", "button", "button:event"),
        ("confirm_stop", "stop", "button", "button:event"),
    ]
    member = [
        ("activate", "start", "peer", "peer:cam-001"),
        ("activate", "ignore", "peer", "peer:cam-004"),
        ("deactivate", "refuse", "peer", "peer:cam-004"),  # cam-004 is not its master
        ("deactivate", "stop", "peer", "peer:cam-001"),
    ]
    own_stop = ("deactivate", "refuse", "button", "button:event")  # only the master stops it
    assert triggers(out, "cam-002") == [member[0], own_stop, *member[1:]]
    assert triggers(out, "cam-003") == member
    assert triggers(out, "cam-004") == [
        ("activate", "ignore", "peer", "peer:cam-001"),  # 44 m > 9.1 m
        ("activate", "start", "button", "button:event"),
        ("deactivate", "stop", "button", "button:event"),
        ("deactivate", "refuse", "peer", "peer:cam-001"),  # not recording
    ]


def test_the_example_report(example: tuple[Path, dict[str, Any]]) -> None:
    _, report = example
    assert [camera["device"] for camera in report["cameras"]] == [
        "cam-001",
        "cam-002",
        "cam-003",
        "cam-004",
    ]
    master, member, _, far = report["cameras"]
    assert set(master) == SINGLE_REPORT_KEYS  # each camera's report has the single-camera shape
    assert master["recordings"][0]["start_trigger"] == "holster"
    assert member["recordings"][0]["start_trigger"] == "peer"
    assert member["recordings"][0]["stop_trigger"] == "peer"
    assert member["recordings"][0]["stop_reason"] == "suspect in custody, scene secure"
    # The member's recording starts with the pre-roll, from the master's instant.
    assert member["recordings"][0]["delivered_pre_roll_s"] >= 29.0
    assert member["recordings"][0]["stop_s"] == master["recordings"][0]["stop_s"]
    assert far["recordings"][0]["start_trigger"] == "button"
    group = report["group"]
    assert group["name"] == "unit-12"
    joined = {item["camera"]: item for item in group["joined"]}
    assert set(joined) == {"cam-002", "cam-003"}
    assert joined["cam-002"]["master"] == "cam-001"
    assert joined["cam-002"]["master_recording"] == master["recordings"][0]["id"]
    assert joined["cam-002"]["recording"] == member["recordings"][0]["id"]
    assert joined["cam-002"]["distance_m"] == pytest.approx(4.2, abs=0.1)
    ignored = [d for d in group["decisions"] if d["camera"] == "cam-004" and d["act"] == "ignore"]
    assert ignored[0]["distance_m"] == pytest.approx(44.5, abs=0.1)
    assert "out of range" in ignored[0]["decision"]
    assert [b["message"] for b in group["broadcasts"]] == [
        "peer_activation",
        "peer_activation",
        "peer_deactivation",
        "peer_deactivation",
    ]
    assert report["compliance"] == []
    assert report["totals"]["cameras"] == 4
    assert report["totals"]["joined"] == 2


def test_each_camera_directory_verifies(example: tuple[Path, dict[str, Any]]) -> None:
    out, _ = example
    for camera in ("cam-001", "cam-002", "cam-003", "cam-004"):
        assert _cli_json(["verify", str(out / camera), "--json"])["ok"] is True


def test_the_command_line_prints_the_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f.toml"
    path.write_text(fleet_text(steps=step(20, "double_press", 1) + step(40, "hold", 1)))
    assert main(["scenario", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "3 cameras in group g" in err
    assert "cam-002 <- cam-001 peer_activation, 3.3 m: start" in err
    assert "cam-003 <- cam-001 peer_activation, 111.2 m: ignore" in err
    assert main(["scenario", str(path), "--out", str(tmp_path / "out")]) == 2  # not empty


def test_strict_fails_on_a_finding_of_any_camera(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(fleet_text(steps=step(20, "double_press", 3) + step(40, "hold", 3)))
    argv = ["scenario", str(path), "--json", "--strict"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 1  # cam-003 stopped without a reason
    path.write_text(fleet_text(steps=step(20, "double_press", 3) + step(40, "hold", 3, reason="x")))
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0


# -- routing --------------------------------------------------------------------------------------


def test_a_post_event_stop_reaches_the_group_at_once(tmp_path: Path) -> None:
    steps = step(20, "double_press", 1) + step(40, "hold", 1, reason="done")
    fleet = play(tmp_path, fleet_text(steps=steps, policy="post_event_s = 5"))
    master, member, _ = build_fleet_report(fleet)["cameras"]
    assert member["recordings"][0]["stop_trigger"] == "peer"
    (stop,) = [b for b in fleet.broadcasts if b.message == "peer_deactivation"]
    assert 45.0 <= stop.at_s <= 45.0 + 0.1 + 1e-9  # the post-event end, within one look
    assert master["recordings"][0]["stop_s"] <= stop.at_s


def test_an_off_camera_hears_nothing_and_a_rebooted_one_keeps_its_fix(tmp_path: Path) -> None:
    steps = (
        step(10, "power_off", 3)
        + step(12, "power_loss", 2)
        + step(13, "power_on", 2)
        + step(20, "double_press", 1)
        + step(40, "hold", 1, reason="done")
    )
    fleet = play(tmp_path, fleet_text(steps=steps))
    to_off = [d for d in fleet.deliveries if d.receiver == "cam-003"]
    assert to_off
    assert not any(d.delivered for d in to_off)
    assert all(r[2] != "peer" for r in triggers(tmp_path, "cam-003"))
    rebooted = [d for d in fleet.deliveries if d.receiver == "cam-002"]
    assert rebooted[0].distance_m == pytest.approx(3.3, abs=0.1)
    assert ("activate", "start", "peer", "peer:cam-001") in triggers(tmp_path, "cam-002")


def test_a_camera_that_moves_is_measured_from_its_new_fix(tmp_path: Path) -> None:
    walk = step(1, "gps", 3, route=[[40.001, -75.0], [40.00001, -75.0]], speed_mps=10, jitter_m=0)
    fleet = play(tmp_path, fleet_text(steps=walk + step(30, "double_press", 1)))
    to_walker = next(d for d in fleet.deliveries if d.receiver == "cam-003")
    assert to_walker.distance_m is not None
    assert to_walker.distance_m < 9.1
    assert ("activate", "start", "peer", "peer:cam-001") in triggers(tmp_path, "cam-003")


def test_without_a_group_cameras_run_as_alone(tmp_path: Path) -> None:
    """A fleet without a group gives exactly what each camera's own scenario gives alone.

    Alone with the fleet's feed: a fleet's cameras share one payload filler block.
    """
    steps = step(20, "double_press", 1) + step(30, "press", 2) + step(50, "hold", None)
    text = fleet_text("count = 2", steps)
    fleet = play(tmp_path / "fleet", text)
    assert fleet.broadcasts == []
    assert fleet.deliveries == []
    scenario = parse_scenario(text, "fleet.toml")
    for single in scenario.camera_scenarios():
        alone = tmp_path / "alone" / single.device.id
        ScenarioRun(single, alone, feed=fleet_feed(scenario)).run()
        assert files(alone) == files(tmp_path / "fleet" / single.device.id)


def test_fleet_run_refuses_a_single_camera_scenario(tmp_path: Path) -> None:
    single = parse_scenario('[scenario]\nduration = 60\n[device]\nid = "x"\nseed = 1\n')
    with pytest.raises(ConfigError, match="no \\[fleet\\] table"):
        FleetRun(single, tmp_path)
    assert single.camera_scenarios() == (single,)


# -- determinism and single cameras ---------------------------------------------------------------


def test_the_same_file_twice_gives_identical_reports_and_directories(tmp_path: Path) -> None:
    steps = step(20, "double_press", 1) + step(25, "hold", 2) + step(40, "hold", 1, reason="ok")
    text = fleet_text(steps=steps)
    first, second = play(tmp_path / "a", text), play(tmp_path / "b", text)
    assert build_fleet_report(first) == build_fleet_report(second)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    play(tmp_path / "c", text.replace("seed = 9", "seed = 10"))
    assert files(tmp_path / "c").keys() == files(tmp_path / "a").keys()
    assert files(tmp_path / "c") != files(tmp_path / "a")


def test_a_single_camera_file_runs_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[scenario]\nduration = 60\n[device]\nid = "solo"\nseed = 4\n[media]\naudio = false\n'
    text += step(0, "power_on") + step(10, "double_press") + step(30, "hold", reason="done")
    scenario = parse_scenario(text, "solo.toml")
    assert scenario.fleet is None
    assert all(e.cameras is None for e in scenario.timeline)
    direct = ScenarioRun(scenario, tmp_path / "direct")
    direct.run()
    path = tmp_path / "solo.toml"
    path.write_text(text)
    assert main(["scenario", str(path), "--out", str(tmp_path / "cli"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "cameras" not in report
    assert report["device"] == "solo"
    assert report == json.loads(json.dumps(build_report(direct)))
    assert files(tmp_path / "cli") == files(tmp_path / "direct")


# -- the lazy feed ---------------------------------------------------------------------------------

_BUSY_STEPS = (
    step(8, "power_loss", 4)
    + step(9, "power_on", 4)
    + step(20, "double_press", 1)  # starts cam-002 (3.3 m) from a buffer idle for 20 s
    + step(24, "hold", 2)  # a member's own stop: refused
    + step(30, "double_press", 3)  # 111 m away: nobody joins
    + step(41, "hold", 1, reason="done")  # post-event: the group hears of the stop 5 s later
    + step(45, "double_press", 4)  # at 44 m, the rebooted camera starts nobody
    + step(47, "hold", 3, reason="ok")
    + step(52, "gps", 4, route=[[40.0, -75.0], [40.00002, -75.0]], speed_mps=20, jitter_m=0)
    + step(60, "hold", 4, reason="ok")
    + step(70, "double_press", 1)  # starts cam-002 and cam-004 (moved in), both idle for 10 s+
)
_FOUR = (
    'count = 4\ngroup = "g"\n'
    "positions = [[40.0, -75.0], [40.00003, -75.0], [40.001, -75.0], [40.0004, -75.0]]"
)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(fleet_text(_FOUR, _BUSY_STEPS, "post_event_s = 5"), id="busy"),
        pytest.param(
            fleet_text(
                steps=step(10, "double_press", 1) + step(50, "hold", 1, reason="x"),
                policy="storage_bytes = 600000\nstorage_reserve_bytes = 100000",
            ),
            id="storage-full",  # the master stops as it is fed: routed at the same step
        ),
        pytest.param(EXAMPLE.read_text(), id="example"),
    ],
)
def test_the_lazy_feed_gives_what_the_eager_feed_gives(tmp_path: Path, text: str) -> None:
    """Decisions, routing, reports and every file byte for byte, with no more packets made."""
    scenario = parse_scenario(text, "fleet.toml")
    lazy = FleetRun(scenario, tmp_path / "lazy")
    assert lazy.feed.lazy
    eager_feed = FeedOptions(filler_seed=lazy.feed.filler_seed)
    eager = FleetRun(scenario, tmp_path / "eager", feed=eager_feed)
    lazy.run()
    eager.run()
    assert lazy.broadcasts == eager.broadcasts
    assert lazy.deliveries == eager.deliveries
    for camera in lazy.ids:
        assert triggers(tmp_path / "lazy", camera) == triggers(tmp_path / "eager", camera)
    assert build_fleet_report(lazy) == build_fleet_report(eager)
    assert files(tmp_path / "lazy") == files(tmp_path / "eager")
    made = [sum(run.stats.packets for run in fleet.runs) for fleet in (lazy, eager)]
    assert made[0] <= made[1]


def test_a_stop_made_as_media_is_fed_reaches_the_group_within_a_batch(tmp_path: Path) -> None:
    text = fleet_text(
        steps=step(10, "double_press", 1) + step(50, "hold", 1, reason="x"),
        policy="storage_bytes = 600000\nstorage_reserve_bytes = 100000",
    )
    fleet = play(tmp_path, text)
    (recording,) = build_fleet_report(fleet)["cameras"][0]["recordings"]
    assert recording["stop_trigger"] == "storage"
    (stop,) = [b for b in fleet.broadcasts if b.message == "peer_deactivation"]
    assert recording["stop_s"] <= stop.at_s <= recording["stop_s"] + 0.5  # one media batch


def test_idle_cameras_hold_no_buffer(tmp_path: Path) -> None:
    """Memory follows the cameras recording: an idle camera's buffer is forgotten, not kept."""
    steps = step(20, "double_press", 1) + step(40, "hold", 1, reason="done")
    scenario = parse_scenario(fleet_text(GROUP3, steps))
    assert max(_buffers_held(scenario, tmp_path / "eager", FeedOptions())) == 3  # all kept
    lazy = _buffers_held(scenario, tmp_path / "lazy", None)
    assert max(lazy) == 1  # at most the one with something due within 5 s
    assert lazy[-1] == 0


def _buffers_held(scenario: Scenario, out: Path, feed: FeedOptions | None) -> list[int]:
    """How many cameras hold a pre-event buffer after each step of the fleet."""
    fleet = FleetRun(scenario, out, feed=feed)
    held: list[int] = []

    def count(_done: float, _total: float) -> None:
        held.append(sum(run.camera.buffer.allocated for run in fleet.runs))

    fleet.run(count)
    return held


# -- the range rule -------------------------------------------------------------------------------

_RANGE_BASE = """\
[scenario]
duration = 12
[device]
seed = 3
[fleet]
ids = ["m", "a", "b", "c"]
group = "g"
positions = {positions}
[policy]
pre_event_s = 1
peer = {{ range_m = {range_m} }}
[media]
video = "720p30-low"
bitrate_bps = 100000
audio = false
[[timeline]]
at = 0
do = "power_on"
[[timeline]]
at = 5
do = "double_press"
camera = "m"
"""

_OFFSETS = st.tuples(st.floats(-0.0003, 0.0003), st.floats(-0.0003, 0.0003))


@settings(max_examples=20, deadline=None)
@given(
    center=st.tuples(st.floats(-60, 60), st.floats(-179, 179)),
    offsets=st.lists(_OFFSETS, min_size=3, max_size=3),
    range_m=st.floats(0, 40),
)
def test_a_camera_joins_iff_within_range_of_the_master(
    tmp_path_factory: pytest.TempPathFactory,
    center: tuple[float, float],
    offsets: list[tuple[float, float]],
    range_m: float,
) -> None:
    positions = [center, *((center[0] + a, center[1] + b) for a, b in offsets)]
    away = [distance_m(p, center) for p in positions[1:]]
    assert all(d is not None for d in away)
    assume(all(abs(d - range_m) > 1e-6 for d in away if d is not None))
    text = _RANGE_BASE.format(positions=json.dumps(positions), range_m=range_m)
    out = tmp_path_factory.mktemp("range")
    fleet = play(out, text)
    joined = {item["camera"] for item in build_fleet_report(fleet)["group"]["joined"]}
    expected = {cam for cam, d in zip("abc", away, strict=True) if d is not None and d <= range_m}
    assert joined == expected
