"""The camera's audit trail: every decision, with its reason and trigger, in the audit log.

Kept apart from the state machine so that ``device/camera.py`` reads as the rules and this module
as what gets written down about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from device.audit import AuditLog
from device.auditformat import JsonValue
from device.clock import DeviceClock
from device.policy import RecordingPolicy
from device.rules import PolicyRules
from device.store import ClosedSegment, Recovery
from protocol.common import Trigger


@dataclass(frozen=True, slots=True)
class Decision:
    """What the camera did with a request, and why."""

    accepted: bool
    reason: str


class CameraAudit:
    """Writes audit records stamped with the device's UTC and monotonic time."""

    def __init__(self, log: AuditLog, clock: DeviceClock) -> None:
        self.log = log
        self.clock = clock

    def record(self, kind: str, now: float, /, **fields: JsonValue) -> None:
        """One audit record of ``kind`` at monotonic time ``now``."""
        self.log.append(kind, self.clock.utc(now), round(now, 6), **fields)

    def trigger(
        self,
        request: str,
        trigger: Trigger,
        decision: Decision,
        now: float,
        **extra: str | None,
    ) -> None:
        """A request to activate or deactivate, its trigger, and what was decided."""
        self.record(
            "trigger",
            now,
            request=request,
            trigger=trigger.kind,
            source=trigger.source,
            hw_time_ms=trigger.hw_time_ms,
            accepted=decision.accepted,
            decision=decision.reason,
            **extra,
        )

    def mode(
        self, mode: str, decision: Decision, now: float, *, enabled: bool, source: str
    ) -> None:
        """A request to switch a mode on or off, and what was decided."""
        self.record(
            "mode",
            now,
            mode=mode,
            enabled=enabled,
            source=source,
            accepted=decision.accepted,
            decision=decision.reason,
        )

    def segment_closed(self, closed: ClosedSegment, now: float) -> None:
        """A segment was closed and its manifest signed."""
        self.record("segment_closed", now, **_segment_fields(closed))

    def recovery(self, recovery: Recovery, root: Path, now: float) -> list[tuple[str, str]]:
        """Audit what power-on recovery did; return (fault code, path) pairs to report."""
        faults = []
        for path, why in recovery.set_aside:
            where = str(path.relative_to(root))
            self.record("segment_set_aside", now, path=where, reason=why.replace(str(path), where))
            faults.append(("segment_set_aside", where))
        for segment in recovery.closed:
            self.record("segment_recovered", now, **_segment_fields(segment))
            faults.append(("recovered_segment", str(segment.path.relative_to(root))))
        return faults


def _segment_fields(segment: ClosedSegment) -> dict[str, JsonValue]:
    manifest = segment.manifest
    return {
        "recording": manifest.recording,
        "index": manifest.index,
        "size": manifest.size,
        "sha256": manifest.sha256,
        "records": manifest.records,
    }


def policy_fields(policy: RecordingPolicy) -> dict[str, JsonValue]:
    """The policy as audit fields (written at every power on)."""
    return {
        "pre_event_s": policy.pre_event_s,
        "pre_event_max_bytes": policy.pre_event_max_bytes,
        "audio_in_buffer": policy.audio_in_buffer,
        "post_event_s": policy.post_event_s,
        "segment_s": policy.segment_s,
        "max_recording_s": policy.max_recording_s,
        "storage_bytes": policy.storage_bytes,
        "durability": policy.durability.value,
    }


def rules_fields(rules: PolicyRules) -> dict[str, JsonValue]:
    """The rules as audit fields (written at every power on, after the recording policy)."""
    triggers = rules.triggers
    return {
        "triggers_enabled": [kind for kind, rule in triggers.items() if rule.enabled],
        "triggers_disabled": [kind for kind, rule in triggers.items() if not rule.enabled],
        "cancel_windows_s": {
            k: r.cancel_window_s for k, r in triggers.items() if r.cancel_window_s
        },
        "confirm_stop": [kind for kind, rule in triggers.items() if rule.confirm_stop],
        "stop": {
            "reason_required": rules.stop.reason_required,
            "confirm_window_s": rules.stop.confirm_window_s,
            "remote_may_stop_local": rules.stop.remote_may_stop_local,
            "members_may_stop_group": rules.stop.members_may_stop_group,
        },
        "reminders_s": {
            "recording": rules.modes.recording_reminder_s,
            "sleep": rules.modes.sleep_reminder_s,
        },
        "critical_categories": list(rules.categories.critical),
        "peer_range_m": rules.peer.range_m,
        "geofences": [fence.name for fence in rules.geofences],
    }


def marker_document(source: str, note: str | None, pts_s: float) -> bytes:
    """The MARKER record body of a bookmark."""
    return msgspec.json.encode({"kind": "marker", "source": source, "note": note, "pts_s": pts_s})
