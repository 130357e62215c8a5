"""The camera: a state machine that records when the policy says so, and says why.

Every entry point takes the monotonic time ``now``; nothing here reads a clock. Triggers, stop
requests, presses, categories and modes go through the policy engine (``device/decide.py``), and
every decision, the ignored and refused ones included, goes to the audit log with its reason and
the trigger that caused it. The state, the timers and the recording internals are in
``device/camera_core.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from device.auditformat import JsonValue
from device.camera_audit import Decision, marker_document
from device.camera_core import (
    BATTERY,
    CONTINUATION,
    POLICY,
    POWER,
    STORAGE,
    TRANSITIONS,
    CameraCore,
    CameraState,
)
from device.decide import (
    Act,
    RecordingContext,
    StopRequest,
    StopSource,
    Verdict,
    decide_stop,
    decide_trigger,
)
from device.indications import Signal
from device.triggers import TriggerEvent
from protocol.common import Trigger
from protocol.vocabulary import ClockSource, Mode

__all__ = [
    "BATTERY",
    "CONTINUATION",
    "POLICY",
    "POWER",
    "STORAGE",
    "TRANSITIONS",
    "Camera",
    "CameraState",
    "Decision",
]

_STOP_SOURCES: Final = {"remote": StopSource.REMOTE, "peer": StopSource.PEER}


class Camera(CameraCore):
    """One camera. Make it, then ``power_on``; feed packets and requests with ``now``."""

    # -- triggers -----------------------------------------------------------------------------

    def activate(self, trigger: Trigger, now: float) -> Decision:
        """A trigger asks to record (an instant trigger of ``trigger.kind``)."""
        event = TriggerEvent(
            kind=trigger.kind, source=trigger.source, hw_time_ms=trigger.hw_time_ms
        )
        return self.trigger(event, now)

    def trigger(self, event: TriggerEvent, now: float) -> Decision:
        """A trigger fired (or a level trigger was released); the policy decides what it does."""
        if not event.active:
            return self._release(event, now)
        if self.state is CameraState.OFF:
            decision = Decision(accepted=False, reason="camera is off")
            self._trail.trigger("activate", event.wire(), decision, now, name=event.name or None)
            return decision
        verdict = decide_trigger(
            event,
            self.rules,
            self.levels,
            now,
            sleeping=self.state is CameraState.SLEEPING,
            recording=self.state is CameraState.RECORDING,
        )
        enabled = self.rules.rule(event.kind).enabled
        self.levels.fired(event, now, asserts=enabled and self.state is not CameraState.SLEEPING)
        decision = self._carry_out(event, verdict, now)
        self._trail.trigger(
            "activate",
            event.wire(),
            decision,
            now,
            act=verdict.act.value,
            name=event.name or None,
            peer=event.peer,
            recording=None if self.recording is None else self.recording.recording_id,
        )
        return decision

    def _release(self, event: TriggerEvent, now: float) -> Decision:
        released = self.levels.released(event)
        reason = "released" if released else "released, but it was not asserted"
        if released and self.recording is not None:
            reason += ": the recording continues until it is stopped"
        decision = Decision(accepted=released, reason=reason)
        self._trail.trigger("release", event.wire(), decision, now, name=event.name or None)
        return decision

    def _carry_out(self, event: TriggerEvent, verdict: Verdict, now: float) -> Decision:
        if verdict.act is not Act.START:
            return Decision(accepted=False, reason=verdict.reason)
        if self.state is CameraState.POST_EVENT:
            self._post_event_end_pts = None
            self._pending_stop = None
            self._move(CameraState.RECORDING, now, "activated during the post-event buffer")
            return Decision(accepted=True, reason="recording continues")
        if self.store.used_bytes + self.policy.storage_reserve_bytes >= self.policy.storage_bytes:
            self._storage_full(now)
            return Decision(accepted=False, reason="storage full")
        group_master = event.peer if event.kind == "peer" else None
        self.context = RecordingContext(start=event, started_at=now, group_master=group_master)
        recording = self._start_recording(event.wire(), now)
        if group_master is None and self.rules.peer.broadcast:
            # This camera is the master of the group recording its broadcast may start.
            self._master_of = recording.recording_id
            self.outbox.peer_activation(
                self._utc(now), recording.recording_id, event.wire(), self.position
            )
        return Decision(accepted=True, reason=verdict.reason)

    def audit_detection(self, kind: str, features: dict[str, float], now: float) -> None:
        """A detector decided: what it measured, before the trigger it raises is decided."""
        rounded = {name: round(value, 6) for name, value in features.items()}
        self._trail.record("detection", now, detector=kind, features=rounded)

    def audit_input_ignored(self, name: str, reason: str, edges: int, now: float) -> None:
        """An input change that conditioning filtered out (contact bounce, a glitch)."""
        self._trail.record("input_ignored", now, input=name, reason=reason, edges=edges)

    # -- stops --------------------------------------------------------------------------------

    def deactivate(self, trigger: Trigger, reason: str | None, now: float) -> Decision:
        """A trigger or person asks to stop; ``reason`` is the stated reason, if any.

        ``trigger.kind`` says who asks: ``remote`` (a command), ``peer`` (a group master's stop,
        ``trigger.source`` naming it as ``peer:ID``), anything else the officer on the camera.
        """
        source = _STOP_SOURCES.get(trigger.kind, StopSource.BUTTON)
        peer = trigger.source.removeprefix("peer:") if source is StopSource.PEER else None
        return self.request_stop(StopRequest(source, reason, peer), trigger, now)

    def request_stop(self, request: StopRequest, trigger: Trigger, now: float) -> Decision:
        """Stop the recording if the stop rules allow; ``trigger`` goes into the manifest."""
        if self.state is not CameraState.RECORDING or self.recording is None:
            verdict = Verdict(Act.REFUSE, "not recording")
        else:
            assert self.context is not None
            verdict = decide_stop(request, self.context, self.rules, self.levels, now)
        decision = self._stop_as_decided(verdict, request, trigger, now)
        self._trail.trigger(
            "deactivate",
            trigger,
            decision,
            now,
            act=verdict.act.value,
            stated_reason=request.reason,
        )
        return decision

    def _stop_as_decided(
        self, verdict: Verdict, request: StopRequest, trigger: Trigger, now: float
    ) -> Decision:
        if verdict.act is Act.REFUSE:
            return Decision(accepted=False, reason=verdict.reason)
        if verdict.act is Act.CONFIRM:
            self._awaiting_confirmation = (request, trigger)
            self.timers.set("confirm_stop", now + self.rules.stop.confirm_window_s)
            self.indicator.signal(Signal.CONFIRM_STOP, now)
            return Decision(accepted=False, reason=verdict.reason)
        self._awaiting_confirmation = None
        self.timers.cancel("confirm_stop")
        if verdict.act is Act.CANCEL:
            stated = f"; stated: {request.reason}" if request.reason else ""
            self._stop_recording(trigger, (verdict.reason + stated)[:200], now)
            self._move(CameraState.BUFFERING, now, "activation cancelled")
            return Decision(accepted=True, reason=verdict.reason)
        if self.policy.post_event_s > 0:
            self._pending_stop = (trigger, request.reason)
            self._post_event_end_pts = (now - self._pts0_mono) + self.policy.post_event_s
            self._move(CameraState.POST_EVENT, now, "stop requested: post-event buffer")
            return Decision(accepted=True, reason=verdict.reason + "; post-event buffer running")
        self._stop_recording(trigger, request.reason, now)
        self._move(CameraState.BUFFERING, now, "recording stopped")
        return Decision(accepted=True, reason=verdict.reason)

    def press(self, source: str, note: str | None, now: float) -> Decision:
        """A single press: confirms a stop that waits for it, else a marker."""
        pending = self._awaiting_confirmation
        if pending is None or self.context is None or self.state is not CameraState.RECORDING:
            return self.marker(source, note, now)
        request, trigger = pending
        verdict = decide_stop(request, self.context, self.rules, self.levels, now, confirmed=True)
        decision = self._stop_as_decided(verdict, request, trigger, now)
        self._trail.trigger(
            "confirm_stop",
            trigger,
            decision,
            now,
            act=verdict.act.value,
            stated_reason=request.reason,
        )
        return decision

    def report_fault(self, code: str, message: str, now: float, **details: JsonValue) -> None:
        """A fault found outside the camera core (its uploads, its audit shipping): audit record
        ``code`` with ``message`` and ``details``, and a ``fault`` event (severity error)."""
        self._trail.record(code, now, message=message, **details)
        self.outbox.fault(self._utc(now), code, "error", message)

    # -- markers, categories, modes -----------------------------------------------------------

    def marker(self, source: str, note: str | None, now: float) -> Decision:
        """Bookmark the recording in progress."""
        recording = self.recording
        if recording is None:
            decision = Decision(accepted=False, reason="not recording")
        else:
            pts = round(now - self._pts0_mono, 6)
            self.write_pre_roll(now)
            recording.mark(marker_document(source, note, pts))
            self.outbox.marker(self._utc(now), recording.recording_id, source, note)
            self.indicator.signal(Signal.MARKER, now)
            decision = Decision(accepted=True, reason="marker written")
        self._trail.record("marker", now, source=source, note=note, accepted=decision.accepted)
        return decision

    def categorize(
        self, categories: tuple[str, ...], case_id: str | None, now: float, source: str = "officer"
    ) -> Decision:
        """Assign categories and a case ID to the recording in progress, or the last one.

        In progress: every segment closed from now on carries them in its signed manifest. After
        the stop the manifests are already signed (evidence is never edited on the device), so
        the assignment is kept in the audit log, naming the recording, for the backend to apply.
        A critical-incident category puts the recording under the expedited-upload deadline.
        """
        recording = self.recording
        target = recording or (self.finished[-1] if self.finished else None)
        if target is None:
            decision = Decision(accepted=False, reason="no recording to categorize")
        elif recording is not None:
            recording.categories = tuple(dict.fromkeys(recording.categories + categories))
            recording.case_id = case_id or recording.case_id
            decision = Decision(
                accepted=True, reason="in the manifests of segments closed from now"
            )
        else:
            decision = Decision(accepted=True, reason="recording stopped: kept in the audit log")
        if target is not None and target.recording_id == self._prompt_for:
            self._prompt_for = None
            self.timers.cancel("category_prompt")
        self._trail.record(
            "categorized",
            now,
            recording=None if target is None else target.recording_id,
            categories=list(categories),
            case_id=case_id,
            source=source,
            accepted=decision.accepted,
            decision=decision.reason,
        )
        if target is not None and self.rules.categories.is_critical(categories):
            target.critical = True  # segments closed from now on say so in their manifests
            self._critical(target.recording_id, categories, now)
        return decision

    def _critical(self, recording_id: str, categories: tuple[str, ...], now: float) -> None:
        deadline = self.rules.categories.critical_upload_deadline_s
        self.critical.setdefault(recording_id, now + deadline)
        self._trail.record(
            "critical_incident",
            now,
            recording=recording_id,
            categories=list(categories),
            upload_deadline_s=deadline,
        )

    def set_mode(self, mode: Mode, now: float, *, enabled: bool, source: str) -> Decision:
        """Switch sleep, mute or stealth mode on or off, if the policy allows it."""
        if mode == "sleep":
            return self.sleep(now, source) if enabled else self.wake(now, source)
        allowed = (
            self.rules.modes.mute_allowed if mode == "mute" else self.rules.modes.stealth_allowed
        )
        current = self.muted if mode == "mute" else self.indicator.stealth
        if self.state is CameraState.OFF:
            decision = Decision(accepted=False, reason="camera is off")
        elif enabled and not allowed:
            decision = Decision(accepted=False, reason=f"{mode} mode is not allowed by policy")
        elif current == enabled:
            decision = Decision(accepted=False, reason=f"{mode} mode is already {_on(enabled)}")
        else:
            if mode == "mute":
                self.muted = enabled
            else:
                self.indicator.stealth = enabled
            self.outbox.mode_change(self._utc(now), mode, enabled=enabled, source=source)
            decision = Decision(accepted=True, reason=f"{mode} mode {_on(enabled)}")
        self._trail.mode(mode, decision, now, enabled=enabled, source=source)
        return decision

    def sleep(self, now: float, source: str = "button") -> Decision:
        """Enter sleep mode: no buffer, triggers ignored."""
        if self.state is not CameraState.BUFFERING:
            decision = Decision(accepted=False, reason=f"cannot sleep while {self.state.value}")
        elif not self.rules.modes.sleep_allowed:
            decision = Decision(accepted=False, reason="sleep mode is not allowed by policy")
        else:
            self.buffer.clear()
            self._move(CameraState.SLEEPING, now, "sleep mode")
            self.outbox.mode_change(self._utc(now), "sleep", enabled=True, source=source)
            decision = Decision(accepted=True, reason="sleeping")
        self._trail.mode("sleep", decision, now, enabled=True, source=source)
        return decision

    def wake(self, now: float, source: str = "button") -> Decision:
        """Leave sleep mode and buffer again."""
        if self.state is not CameraState.SLEEPING:
            decision = Decision(accepted=False, reason="not sleeping")
        else:
            self._move(CameraState.BUFFERING, now, "woken")
            self.outbox.mode_change(self._utc(now), "sleep", enabled=False, source=source)
            decision = Decision(accepted=True, reason="buffering")
        self._trail.mode("sleep", decision, now, enabled=False, source=source)
        return decision

    def set_utc(self, utc: datetime, source: ClockSource, now: float) -> None:
        """The clock learns UTC (from sync, GPS or a person): later timestamps use it."""
        before = self.clock.utc(now)
        self.clock.set(utc, now, source)
        self._trail.record("clock_set", now, source=source, previous_utc=before.isoformat())


def _on(enabled: bool) -> str:
    return "on" if enabled else "off"
