"""Scenarios in virtual time: the report, determinism, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sim.cli import main
from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import parse_scenario
from sim.tuning import tune_allocator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SMALL = """
[scenario]
name = "small"
duration = "00:03:00"

[device]
id = "cam-t"
seed = 5
epoch_utc = 2026-11-29T14:00:00Z

[policy]
pre_event_s = 10
segment_s = 20

[media]
video = "720p30"
bitrate_bps = 400000
audio_bitrate_bps = 16000

[[timeline]]
at = 0
do = "power_on"

[[timeline]]
at = 30
do = "double_press"

[[timeline]]
at = 45
do = "press"
note = "marker"

[[timeline]]
at = 70
do = "hold"
reason = "done"

[[timeline]]
at = 100
do = "double_press"

[[timeline]]
at = 110
do = "power_loss"

[[timeline]]
at = 120
do = "power_on"

[[timeline]]
at = 125
do = "double_press"

[[timeline]]
at = 150
do = "hold"
"""


def _run(tmp: Path, text: str = SMALL) -> dict[str, object]:
    run = ScenarioRun(parse_scenario(text, "small.toml"), tmp)
    run.run()
    return build_report(run)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_report_describes_every_recording(tmp_path: Path) -> None:
    report = _run(tmp_path / "out")
    recordings = report["recordings"]
    assert isinstance(recordings, list)
    assert [item["start_trigger"] for item in recordings] == ["button", "button", "button"]
    first, lost, third = recordings
    assert first["stop_reason"] == "done"
    assert first["requested_pre_roll_s"] == 10.0
    assert 10.0 <= first["delivered_pre_roll_s"] < 11.0
    assert all(item["starts_on_keyframe"] for item in recordings)
    assert [seg["index"] for seg in first["segments"]] == list(range(len(first["segments"])))
    assert len(first["segments"]) >= 2  # 50 s at 20 s segments
    assert lost["recovered"] is True
    assert lost["stop_trigger"] == "power"
    assert third["stop_reason"] is None  # stopped with a hold that stated no reason
    assert report["totals"]["power_losses"] == 1  # type: ignore[index]


def test_same_file_and_seed_give_identical_stores_and_reports(tmp_path: Path) -> None:
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b")
    assert first == second
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert files_a == files_b


def test_another_seed_gives_other_evidence(tmp_path: Path) -> None:
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b", SMALL.replace("seed = 5", "seed = 6"))
    hashes = [
        [seg["sha256"] for item in report["recordings"] for seg in item["segments"]]  # type: ignore[attr-defined]
        for report in (first, second)
    ]
    assert not set(hashes[0]) & set(hashes[1])


def test_cli_json_report_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["scenario", str(scenario), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    keys = {
        "id",
        "start_utc",
        "stop_utc",
        "start_trigger",
        "stop_trigger",
        "stop_reason",
        "requested_pre_roll_s",
        "delivered_pre_roll_s",
        "starts_on_keyframe",
        "segments",
    }
    assert keys <= set(report["recordings"][0])
    assert set(report["recordings"][0]["segments"][0]) >= {"index", "bytes", "sha256"}
    assert main(["verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_cli_refuses_a_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["scenario", str(scenario), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_names_the_line_of_a_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SMALL.replace('do = "press"', 'do = "explode"'))
    assert main(["scenario", str(scenario), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml:" in err
    assert "explode" in err


@pytest.mark.parametrize("name", ["quickstart", "late-activation", "clock-unset"])
def test_examples_run_and_verify(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    assert main(["scenario", str(EXAMPLES / f"{name}.toml"), "--out", str(out), "--json"]) == 0
    assert main(["verify", str(out), "--json"]) == 0


def test_late_activation_reports_the_short_pre_roll(tmp_path: Path) -> None:
    run = ScenarioRun(
        parse_scenario((EXAMPLES / "late-activation.toml").read_text(), "late.toml"),
        tmp_path / "out",
    )
    run.run()
    first = build_report(run)["recordings"][0]  # type: ignore[index]
    assert first["delivered_pre_roll_s"] < first["requested_pre_roll_s"]


def test_the_allocator_tuning_applies_on_linux() -> None:
    assert tune_allocator() is sys.platform.startswith("linux")
