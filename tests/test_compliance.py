"""The compliance report: each rule on its own, then the two examples end to end (CLI included)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from device.policy import RecordingPolicy
from device.rules import ComplianceRules, PolicyRules, StopRules
from sim.cli import main
from sim.compliance import ActivityFacts, RecordingFacts, Situation, check
from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD = RecordingFacts(
    id="r1",
    activated_s=100.0,
    media_start_s=70.0,
    stop_s=400.0,
    start_trigger="button",
    stop_trigger="button",
    stop_reason="scene secure",
    requested_pre_roll_s=30.0,
    delivered_pre_roll_s=30.0,
    categories=("traffic stop",),
    critical=False,
    verified_s=None,
)


def findings(
    recordings: list[RecordingFacts],
    activities: list[ActivityFacts] = (),  # type: ignore[assignment]
    rules: PolicyRules | None = None,
    end_s: float = 1000.0,
) -> list[tuple[str, str | None]]:
    situation = Situation(recordings, activities, RecordingPolicy(), rules or PolicyRules(), end_s)
    return [(f.rule, f.recording) for f in check(situation)]


def test_a_compliant_recording_has_no_findings() -> None:
    activity = ActivityFacts("arrest", 90.0, 300.0, "vehicle_lightbar", 95.0)
    assert findings([GOOD], [activity]) == []


def test_short_pre_roll_is_a_late_activation_with_a_tolerance() -> None:
    assert findings([replace(GOOD, delivered_pre_roll_s=29.6)]) == []  # keyframe rounding
    short = replace(GOOD, delivered_pre_roll_s=12.0)
    assert findings([short]) == [("late_activation", "r1")]
    lenient = PolicyRules(compliance=ComplianceRules(min_pre_roll_s=10.0))
    assert findings([short], rules=lenient) == []
    continuation = replace(GOOD, requested_pre_roll_s=0.0, delivered_pre_roll_s=0.0)
    assert findings([continuation]) == []


def test_short_pre_roll_right_after_a_recording_is_not_late() -> None:
    earlier = replace(GOOD, id="r0", media_start_s=0.0, stop_s=60.0)
    follow_on = replace(GOOD, media_start_s=60.0, delivered_pre_roll_s=12.0)
    assert findings([earlier, follow_on]) == []
    gap = replace(follow_on, media_start_s=65.0)
    assert findings([earlier, gap]) == [("late_activation", "r1")]


def test_media_beginning_after_the_first_trigger_is_a_late_activation() -> None:
    activity = ActivityFacts("arrest", 50.0, 300.0, "holster", 60.0)
    situation = Situation([GOOD], [activity], RecordingPolicy(), PolicyRules(), 1000.0)
    (finding,) = check(situation)
    assert finding.rule == "late_activation"
    assert finding.evidence["late_s"] == 10.0
    assert finding.evidence["first_trigger"] == "holster"
    graced = PolicyRules(compliance=ComplianceRules(activation_grace_s=15.0))
    assert findings([GOOD], [activity], graced) == []


def test_an_activity_without_a_trigger_is_measured_from_its_start() -> None:
    activity = ActivityFacts("search", 40.0, 300.0)
    (finding,) = check(Situation([GOOD], [activity], RecordingPolicy(), PolicyRules(), 1e4))
    assert finding.evidence["late_s"] == 30.0
    assert "after its start" in finding.message


def test_an_unrecorded_covered_activity_is_a_finding_and_others_are_not() -> None:
    assert findings([], [ActivityFacts("arrest", 500.0, 600.0)]) == [("unrecorded_activity", None)]
    assert findings([], [ActivityFacts("lunch", 500.0, 600.0)]) == []


def test_recording_a_prohibited_context() -> None:
    protest = ActivityFacts("First Amendment", 350.0, 500.0)
    situation = Situation([GOOD], [protest], RecordingPolicy(), PolicyRules(), 1e4)
    (finding,) = check(situation)
    assert (finding.rule, finding.evidence["overlap_s"]) == ("prohibited_context", 50.0)


@pytest.mark.parametrize("trigger", ["button", "remote", "peer"])
def test_a_stop_by_a_person_without_a_reason(trigger: str) -> None:
    silent = replace(GOOD, stop_trigger=trigger, stop_reason=None)
    assert findings([silent]) == [("stop_without_reason", "r1")]
    relaxed = PolicyRules(stop=StopRules(reason_required=False))
    assert findings([silent], rules=relaxed) == []


def test_stops_by_the_device_need_no_reason() -> None:
    assert findings([replace(GOOD, stop_trigger="policy", stop_reason=None)]) == []


def test_critical_incidents_must_be_verified_within_the_deadline() -> None:
    critical = replace(GOOD, critical=True)
    assert findings([replace(critical, verified_s=3000.0)], end_s=9000.0) == []
    assert findings([replace(critical, verified_s=4100.0)], end_s=9000.0) == [
        ("critical_upload_late", "r1")
    ]
    assert findings([critical], end_s=9000.0) == [("critical_upload_late", "r1")]
    assert findings([critical], end_s=3000.0) == []  # not yet due when the run ended


# -- the examples, end to end ---------------------------------------------------------------------


def report_of(name: str, out: Path) -> dict[str, Any]:
    run = ScenarioRun(load_scenario(EXAMPLES / name), out)
    run.run()
    return build_report(run)


def test_the_findings_example_flags_exactly_its_seeded_problems(tmp_path: Path) -> None:
    report = report_of("compliance-findings.toml", tmp_path / "out")
    rules = sorted((f["rule"], f["recording"]) for f in report["compliance"])
    first, second = (item["id"] for item in report["recordings"])
    assert rules == sorted(
        [
            ("late_activation", first),
            ("stop_without_reason", first),
            ("critical_upload_late", first),
            ("prohibited_context", second),
        ]
    )
    late = next(f for f in report["compliance"] if f["rule"] == "late_activation")
    assert late["evidence"]["first_trigger"] == "holster"
    assert 39.0 < late["evidence"]["late_s"] < 41.0
    assert report["recordings"][0]["compliance"]  # also listed under the recording
    assert report["totals"]["findings"] == 4


def test_the_compliant_example_reports_nothing(tmp_path: Path) -> None:
    report = report_of("compliant-call.toml", tmp_path / "out")
    assert report["compliance"] == []
    (recording,) = report["recordings"]
    assert recording["start_trigger"] == "vehicle_lightbar"
    assert recording["critical"]
    assert recording["uploaded_s"] is not None
    kinds = [t["kind"] for t in recording["triggers"]]
    assert kinds == ["vehicle_lightbar", "holster"]


def test_strict_exits_1_on_findings_and_0_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    findings_file, compliant_file = (
        str(EXAMPLES / "compliance-findings.toml"),
        str(EXAMPLES / "compliant-call.toml"),
    )
    bad = main(["scenario", findings_file, "--out", str(tmp_path / "a"), "--json", "--strict"])
    assert bad == 1
    assert len(json.loads(capsys.readouterr().out)["compliance"]) == 4
    good = main(["scenario", compliant_file, "--out", str(tmp_path / "b"), "--strict"])
    assert good == 0
