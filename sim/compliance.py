"""The compliance report: each recording checked against the agency's written policy.

Inputs are what a supervisor's audit would have: the recordings as their signed manifests describe
them, the device's audit log (every trigger and decision), the policy, when each recording was
verified by the backend, and, from the scenario, what the officer was actually doing (activities
with a context). Each finding names its rule, says what is wrong in a sentence, and carries the
evidence (times, triggers, numbers) that shows it.

Rules:
- ``late_activation``: delivered pre-roll shorter than required (unless the media reaches back
  to the previous recording's end, so nothing is missing), or the recorded media begins after the
  first trigger of a covered activity (plus ``activation_grace_s``).
- ``unrecorded_activity``: a covered activity that no recording overlaps.
- ``stop_without_reason``: a stop by a person or command with no stated reason, when the policy
  requires one.
- ``prohibited_context``: a recording overlapping an activity whose context the policy prohibits.
- ``critical_upload_late``: a critical incident not verified by the backend within its deadline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from device.policy import RecordingPolicy
from device.rules import PolicyRules

_PERSON_STOPS: Final = frozenset({"button", "remote", "peer"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One departure from policy."""

    rule: str
    message: str
    recording: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {
            "rule": self.rule,
            "recording": self.recording,
            "message": self.message,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """What the compliance checks need to know about one recording (times: device seconds)."""

    id: str
    activated_s: float
    media_start_s: float
    stop_s: float
    start_trigger: str
    stop_trigger: str | None
    stop_reason: str | None
    requested_pre_roll_s: float
    delivered_pre_roll_s: float
    categories: tuple[str, ...]
    critical: bool
    verified_s: float | None


@dataclass(frozen=True, slots=True)
class ActivityFacts:
    """What the officer was doing, and the first trigger the camera saw during it."""

    context: str
    start_s: float
    end_s: float
    first_trigger: str | None = None
    first_trigger_s: float | None = None


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything the checks read."""

    recordings: Sequence[RecordingFacts]
    activities: Sequence[ActivityFacts]
    policy: RecordingPolicy
    rules: PolicyRules
    end_s: float


def check(situation: Situation) -> list[Finding]:
    """Every finding, recordings in order, activity findings after their recording's."""
    findings: list[Finding] = []
    previous_stop_s: float | None = None
    for recording in sorted(situation.recordings, key=lambda rec: rec.media_start_s):
        findings += _pre_roll(recording, situation, previous_stop_s)
        previous_stop_s = recording.stop_s
        findings += _stop_reason(recording, situation.rules)
        findings += _critical_upload(recording, situation)
    for activity in situation.activities:
        findings += _activity(activity, situation)
    return findings


def first_triggers(
    spans: Iterable[tuple[str, float, float]], triggers: Sequence[tuple[float, str]]
) -> list[ActivityFacts]:
    """Activities (context, start, end) with the first trigger seen within each."""
    out = []
    for context, start, end in spans:
        first = next(((at, kind) for at, kind in triggers if start <= at <= end), None)
        out.append(
            ActivityFacts(
                context,
                start,
                end,
                first_trigger=None if first is None else first[1],
                first_trigger_s=None if first is None else first[0],
            )
        )
    return out


def _pre_roll(
    recording: RecordingFacts, situation: Situation, previous_stop_s: float | None
) -> list[Finding]:
    if recording.requested_pre_roll_s == 0:  # a continuation, or a policy with no buffer
        return []
    rules = situation.rules.compliance
    if (
        previous_stop_s is not None
        and recording.media_start_s <= previous_stop_s + rules.pre_roll_tolerance_s
    ):
        return []  # the buffer was emptied by the last recording: nothing before it is missing
    required = rules.min_pre_roll_s
    if required is None:
        required = situation.policy.pre_event_s
    if recording.delivered_pre_roll_s + rules.pre_roll_tolerance_s >= required:
        return []
    return [
        Finding(
            "late_activation",
            f"delivered pre-roll {recording.delivered_pre_roll_s:.1f} s is shorter than the "
            f"{required:g} s the policy requires",
            recording.id,
            {
                "requested_pre_roll_s": recording.requested_pre_roll_s,
                "delivered_pre_roll_s": recording.delivered_pre_roll_s,
                "required_pre_roll_s": required,
                "start_trigger": recording.start_trigger,
            },
        )
    ]


def _stop_reason(recording: RecordingFacts, rules: PolicyRules) -> list[Finding]:
    if not rules.stop.reason_required or recording.stop_reason is not None:
        return []
    if recording.stop_trigger not in _PERSON_STOPS:
        return []
    return [
        Finding(
            "stop_without_reason",
            f"stopped by {recording.stop_trigger} without a stated reason; the policy requires one",
            recording.id,
            {"stop_trigger": recording.stop_trigger, "stop_s": recording.stop_s},
        )
    ]


def _critical_upload(recording: RecordingFacts, situation: Situation) -> list[Finding]:
    if not recording.critical:
        return []
    deadline_s = situation.rules.categories.critical_upload_deadline_s
    due = recording.stop_s + deadline_s
    verified = recording.verified_s
    if verified is not None and verified <= due:
        return []
    if verified is None and situation.end_s <= due:
        return []  # still within its deadline when the run ended
    late = "was verified late" if verified is not None else "was not uploaded"
    return [
        Finding(
            "critical_upload_late",
            f"critical incident {late}: due {deadline_s:g} s after the stop",
            recording.id,
            {
                "categories": list(recording.categories),
                "stop_s": recording.stop_s,
                "due_s": round(due, 6),
                "verified_s": verified,
            },
        )
    ]


def _activity(activity: ActivityFacts, situation: Situation) -> list[Finding]:
    rules = situation.rules.compliance
    context = activity.context.casefold()
    overlapping = [
        rec
        for rec in situation.recordings
        if rec.media_start_s < activity.end_s and rec.stop_s > activity.start_s
    ]
    evidence: dict[str, Any] = {
        "context": activity.context,
        "start_s": activity.start_s,
        "end_s": activity.end_s,
    }
    if context in {name.casefold() for name in rules.prohibited}:
        return [
            Finding(
                "prohibited_context",
                f"recorded during {activity.context!r}, which the policy prohibits recording",
                rec.id,
                evidence
                | {
                    "overlap_s": round(
                        min(rec.stop_s, activity.end_s) - max(rec.media_start_s, activity.start_s),
                        6,
                    )
                },
            )
            for rec in overlapping
        ]
    if context not in {name.casefold() for name in rules.covered}:
        return []
    if not overlapping:
        return [
            Finding(
                "unrecorded_activity",
                f"covered activity {activity.context!r} was not recorded",
                None,
                evidence | {"first_trigger": activity.first_trigger},
            )
        ]
    reference = activity.start_s if activity.first_trigger_s is None else activity.first_trigger_s
    first = min(overlapping, key=lambda rec: rec.media_start_s)
    late_s = first.media_start_s - (reference + rules.activation_grace_s)
    if late_s <= 0:
        return []
    what = (
        f"its first trigger ({activity.first_trigger})"
        if activity.first_trigger is not None
        else "its start"
    )
    return [
        Finding(
            "late_activation",
            f"the recording of {activity.context!r} begins {late_s:.1f} s after {what}",
            first.id,
            evidence
            | {
                "first_trigger": activity.first_trigger,
                "first_trigger_s": activity.first_trigger_s,
                "media_start_s": first.media_start_s,
                "late_s": round(late_s, 6),
            },
        )
    ]
