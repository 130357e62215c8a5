"""The scenario report: what was recorded, read back from the data directory.

Built from the signed manifests on disk (recovered segments included), not from the run's memory,
so it describes the evidence as a verifier would find it. Deterministic: the same store gives the
same report, byte for byte.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from device.packets import Stream
from device.recordfile import SegmentReader
from device.recordformat import RecordType
from device.store import ClosedSegment
from sim.audit_digest import AuditDigest, read_audit
from sim.compliance import RecordingFacts, Situation, check, first_triggers
from sim.runner import ScenarioRun


def build_report(
    run: ScenarioRun, segments: Iterable[ClosedSegment] | None = None
) -> dict[str, Any]:
    """The JSON report of a finished run.

    ``segments``: where the evidence is now (a receiver's copy, once the device has deleted its
    own after verification); by default the device's store.
    """
    scenario = run.scenario
    stored = run.camera.store.closed_segments() if segments is None else segments
    recordings = _recordings(stored)
    audit = read_audit(run.out / "audit.log")
    facts = [_facts(item, audit, run) for item in recordings]
    activities = first_triggers(
        ((span.context, span.start_s, span.end_s) for span in run.activities), audit.triggers
    )
    findings = check(
        Situation(facts, activities, scenario.policy, scenario.rules, scenario.duration_s)
    )
    for item, fact in zip(recordings, facts, strict=True):
        item["triggers"] = audit.by_recording.get(item["id"], [])
        item["categories"] = list(fact.categories)
        item["critical"] = fact.critical
        item["uploaded_s"] = fact.verified_s
        item["compliance"] = [f.to_json() for f in findings if f.recording == item["id"]]
    return {
        "scenario": scenario.name,
        "device": scenario.device.id,
        "seed": scenario.device.seed,
        "duration_s": scenario.duration_s,
        "key_id": run.identity.key.key_id,
        "policy": scenario.policy_name,
        "recordings": recordings,
        "activities": [
            {
                "context": a.context,
                "start_s": a.start_s,
                "end_s": a.end_s,
                "first_trigger": a.first_trigger,
                "first_trigger_s": a.first_trigger_s,
            }
            for a in activities
        ],
        "compliance": [f.to_json() for f in findings],
        "totals": {
            "recordings": len(recordings),
            "segments": sum(len(item["segments"]) for item in recordings),
            "bytes": sum(seg["bytes"] for item in recordings for seg in item["segments"]),
            "recorded_s": round(sum(item["duration_s"] for item in recordings), 3),
            "boots": run.stats.boots,
            "power_losses": run.stats.power_losses,
            "requests_refused": run.stats.refused,
            "findings": len(findings),
        },
    }


def _facts(item: dict[str, Any], audit: AuditDigest, run: ScenarioRun) -> RecordingFacts:
    categories = tuple(dict.fromkeys([*item["categories"], *audit.categories.get(item["id"], [])]))
    indexes = [segment["index"] for segment in item["segments"]]
    return RecordingFacts(
        id=item["id"],
        activated_s=audit.started.get(item["id"], item["start_s"]),
        media_start_s=item["start_s"],
        stop_s=item["stop_s"],
        start_trigger=item["start_trigger"],
        stop_trigger=item["stop_trigger"],
        stop_reason=item["stop_reason"],
        requested_pre_roll_s=item["requested_pre_roll_s"],
        delivered_pre_roll_s=item["delivered_pre_roll_s"],
        categories=categories,
        critical=item["critical"] or run.scenario.rules.categories.is_critical(categories),
        verified_s=run.uplink.verified_at(item["id"], indexes),
    )


def _recordings(segments: Iterable[ClosedSegment]) -> list[dict[str, Any]]:
    by_recording: dict[str, list[ClosedSegment]] = defaultdict(list)
    for segment in segments:
        by_recording[segment.manifest.recording].append(segment)
    return [_recording(rec_id, segments) for rec_id, segments in sorted(by_recording.items())]


def _recording(recording_id: str, segments: list[ClosedSegment]) -> dict[str, Any]:
    first, last = segments[0].manifest, segments[-1].manifest
    return {
        "id": recording_id,
        "start_utc": _utc(first.start_utc),
        "stop_utc": _utc(last.stop_utc),
        "start_s": first.start_monotonic_s,
        "stop_s": last.stop_monotonic_s,
        "duration_s": round(last.stop_monotonic_s - first.start_monotonic_s, 6),
        "clock_set": first.clock_set,
        "start_trigger": first.start_trigger,
        "stop_trigger": last.stop_trigger,
        "stop_reason": last.stop_reason,
        "requested_pre_roll_s": first.requested_pre_roll_s,
        "delivered_pre_roll_s": first.delivered_pre_roll_s,
        "starts_on_keyframe": starts_on_keyframe(segments[0].path),
        "recovered": any(seg.manifest.status == "recovered" for seg in segments),
        "categories": list(last.categories),
        "case_id": last.case_id,
        "critical": any(seg.manifest.critical for seg in segments),
        "segments": [
            {
                "index": seg.manifest.index,
                "bytes": seg.manifest.size,
                "sha256": seg.manifest.sha256,
                "status": seg.manifest.status,
            }
            for seg in segments
        ],
    }


def starts_on_keyframe(segment: Path) -> bool | None:
    """Whether the first video packet of a segment is a keyframe (False if it has no video).

    None when the file is not here to read (deleted from the device after a verified upload).
    """
    if not segment.exists():
        return None
    with SegmentReader(segment, strict=False, with_payload=False) as reader:
        for record in reader:
            media = record.info.media
            if record.info.type is RecordType.MEDIA and media and media.stream == Stream.VIDEO:
                return media.keyframe
    return False


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
