"""The camera core: power, buffering, recording, sleep, battery and storage, as a state machine.

Every entry point takes the monotonic time ``now``; nothing here reads a clock. Decisions go to the
audit log with their reason, ignored triggers included. The evidence store and audit log are the
only I/O, injected, so the same core runs in real time (the daemon) and in virtual time
(scenarios). Media packets arrive through ``on_packet`` with pts on the encoder's clock, which
starts at power-on.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Final

from device.audit import AuditLog
from device.battery import Battery, BatteryAlert, Load
from device.camera_audit import CameraAudit, Decision, marker_document, policy_fields
from device.camera_events import EventOutbox
from device.clock import DeviceClock
from device.packets import Packet, PayloadSource, Stream
from device.policy import RecordingPolicy
from device.prebuffer import PreEventBuffer
from device.recording import ActiveRecording, RecordingStart
from device.store import ClosedSegment, EvidenceStore
from protocol.common import Trigger
from protocol.errors import LocalProtocolError
from protocol.vocabulary import ClockSource, FaultSeverity


class CameraState(Enum):
    """The camera's states; the allowed moves are in ``TRANSITIONS``."""

    OFF = "off"
    BUFFERING = "buffering"
    RECORDING = "recording"
    POST_EVENT = "post_event"
    SLEEPING = "sleeping"


TRANSITIONS: Final[dict[CameraState, frozenset[CameraState]]] = {
    CameraState.OFF: frozenset({CameraState.BUFFERING}),
    CameraState.BUFFERING: frozenset(
        {CameraState.RECORDING, CameraState.SLEEPING, CameraState.OFF}
    ),
    CameraState.RECORDING: frozenset(
        {CameraState.POST_EVENT, CameraState.BUFFERING, CameraState.OFF}
    ),
    CameraState.POST_EVENT: frozenset(
        {CameraState.RECORDING, CameraState.BUFFERING, CameraState.OFF}
    ),
    CameraState.SLEEPING: frozenset({CameraState.BUFFERING, CameraState.OFF}),
}

POWER: Final = Trigger(kind="power", source="power")
POLICY: Final = Trigger(kind="policy", source="policy")
STORAGE: Final = Trigger(kind="storage", source="storage")
BATTERY: Final = Trigger(kind="battery", source="battery")
CONTINUATION: Final = Trigger(kind="policy", source="max_duration")


class Camera:
    """One camera. Make it, then ``power_on``; feed packets and requests with ``now``."""

    def __init__(
        self,
        *,
        device_id: str,
        policy: RecordingPolicy,
        battery: Battery,
        store: EvidenceStore,
        audit: AuditLog,
        clock: DeviceClock,
        now: float,
    ) -> None:
        self.device_id = device_id
        self.policy = policy
        self.store = store
        self.audit = audit
        self.clock = clock
        self._trail = CameraAudit(audit, clock)
        self.battery = battery
        self.buffer = PreEventBuffer(policy.buffer_config())
        self.outbox = EventOutbox(device_id)
        self.state = CameraState.OFF
        self.recording: ActiveRecording | None = None
        self.finished: list[ActiveRecording] = []
        self._pts0_mono = now
        self._media: PayloadSource | None = None
        self._post_event_end_pts: float | None = None
        self._pending_stop: tuple[Trigger, str | None] | None = None
        self._boots = 0

    # -- power --------------------------------------------------------------------------------

    def power_on(self, now: float, media: PayloadSource) -> list[ClosedSegment]:
        """Boot: recover what a crash left open, then buffer. Media pts 0 is ``now``."""
        if self.state is not CameraState.OFF:
            return []
        self._boots += 1
        self._trail.record("power_on", now, boot=self._boots, clock_set=self.clock.is_set)
        recovery = self.store.recover()
        for code, where in self._trail.recovery(recovery, self.store.root, now):
            self.outbox.fault(self._utc(now), code, "warning", where)
        self._trail.record("config", now, **policy_fields(self.policy))
        self._media = media
        self._pts0_mono = now
        self._move(CameraState.BUFFERING, now, "powered on")
        self._battery(now)
        return recovery.closed

    def power_off(self, now: float, reason: str = "powered off") -> None:
        """Shut down cleanly: close the recording, flush everything."""
        if self.state is CameraState.OFF:
            return
        if self.recording is not None:
            self._stop_recording(POWER, reason, now)
        self.buffer.clear()
        self._move(CameraState.OFF, now, reason)
        self._battery(now)
        self._checkpoint(now)

    def power_loss(self) -> None:
        """The power is gone this instant: nothing is closed or flushed.

        What the open segment had handed to storage stays; what sat in memory is lost. The next
        ``power_on`` (of a new ``Camera`` on the same store) recovers the segment.
        """
        if self.recording is not None:
            self.recording.abandon()
            self.recording = None
        self.state = CameraState.OFF

    # -- media --------------------------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        """The encoder's next packet (pts order)."""
        state = self.state
        if state is CameraState.BUFFERING:
            self.buffer.push(packet, self._source())
        elif state is CameraState.RECORDING:
            self._record(packet)
        elif state is CameraState.POST_EVENT:
            end = self._post_event_end_pts
            if end is not None and packet.pts_s >= end:
                self._end_post_event(self._pts0_mono + packet.pts_s)
                self.buffer.push(packet, self._source())
            else:
                self._record(packet)

    def _record(self, packet: Packet) -> None:
        recording = self.recording
        assert recording is not None
        if packet.keyframe and packet.stream is Stream.VIDEO:
            # Once per GOP, not per packet: the reserve covers what a GOP can overshoot.
            now = self._pts0_mono + packet.pts_s
            if (
                self.store.used_bytes + self.policy.storage_reserve_bytes
                > self.policy.storage_bytes
            ):
                self._storage_full(now)
                self._stop_recording(STORAGE, "storage full", now)
                self._move(CameraState.BUFFERING, now, "storage full")
                self.buffer.push(packet, self._source())
                return
            if packet.pts_s - recording.start.started_pts_s >= self.policy.max_recording_s:
                recording = self._continue_in_new_recording(now)
        closed = recording.append(packet, self._source())
        if closed is not None:
            self._trail.segment_closed(closed, self._pts0_mono + packet.pts_s)

    # -- requests -----------------------------------------------------------------------------

    def activate(self, trigger: Trigger, now: float) -> Decision:
        """A trigger asks to record."""
        decision = self._decide_activation(trigger, now)
        self._trail.trigger("activate", trigger, decision, now)
        return decision

    def _decide_activation(self, trigger: Trigger, now: float) -> Decision:
        if self.state is CameraState.OFF:
            return Decision(accepted=False, reason="camera is off")
        if self.state is CameraState.SLEEPING:
            return Decision(accepted=False, reason="sleep mode: triggers are ignored")
        if self.state is CameraState.RECORDING:
            return Decision(accepted=False, reason="already recording")
        if self.state is CameraState.POST_EVENT:
            self._post_event_end_pts = None
            self._pending_stop = None
            self._move(CameraState.RECORDING, now, "activated during the post-event buffer")
            return Decision(accepted=True, reason="recording continues")
        if self.store.used_bytes + self.policy.storage_reserve_bytes >= self.policy.storage_bytes:
            self._storage_full(now)
            return Decision(accepted=False, reason="storage full")
        self._start_recording(trigger, now)
        return Decision(accepted=True, reason="recording started")

    def deactivate(self, trigger: Trigger, reason: str | None, now: float) -> Decision:
        """A trigger or person asks to stop; ``reason`` is the stated reason, if any."""
        if self.state is not CameraState.RECORDING or self.recording is None:
            decision = Decision(accepted=False, reason="not recording")
        elif self.policy.post_event_s > 0:
            self._pending_stop = (trigger, reason)
            self._post_event_end_pts = (now - self._pts0_mono) + self.policy.post_event_s
            self._move(CameraState.POST_EVENT, now, "stop requested: post-event buffer")
            decision = Decision(accepted=True, reason="post-event buffer running")
        else:
            self._stop_recording(trigger, reason, now)
            self._move(CameraState.BUFFERING, now, "recording stopped")
            decision = Decision(accepted=True, reason="recording stopped")
        self._trail.trigger("deactivate", trigger, decision, now, stated_reason=reason)
        return decision

    def marker(self, source: str, note: str | None, now: float) -> Decision:
        """Bookmark the recording in progress."""
        recording = self.recording
        if recording is None:
            decision = Decision(accepted=False, reason="not recording")
        else:
            pts = round(now - self._pts0_mono, 6)
            recording.mark(marker_document(source, note, pts))
            self.outbox.marker(self._utc(now), recording.recording_id, source, note)
            decision = Decision(accepted=True, reason="marker written")
        self._trail.record("marker", now, source=source, note=note, accepted=decision.accepted)
        return decision

    def categorize(self, categories: tuple[str, ...], case_id: str | None, now: float) -> Decision:
        """Assign categories and a case ID to the recording in progress, or the last one.

        In progress: every segment closed from now on carries them in its signed manifest. After
        the stop the manifests are already signed (evidence is never edited on the device), so
        the assignment is kept in the audit log, naming the recording, for the backend to apply.
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
        self._trail.record(
            "categorized",
            now,
            recording=None if target is None else target.recording_id,
            categories=list(categories),
            case_id=case_id,
            accepted=decision.accepted,
            decision=decision.reason,
        )
        return decision

    def sleep(self, now: float) -> Decision:
        """Enter sleep mode: no buffer, triggers ignored."""
        if self.state is not CameraState.BUFFERING:
            decision = Decision(accepted=False, reason=f"cannot sleep while {self.state.value}")
        else:
            self.buffer.clear()
            self._move(CameraState.SLEEPING, now, "sleep mode")
            self.outbox.mode_change(self._utc(now), "sleep", enabled=True, source="button")
            decision = Decision(accepted=True, reason="sleeping")
        self._trail.record("mode", now, mode="sleep", enabled=True, accepted=decision.accepted)
        return decision

    def wake(self, now: float) -> Decision:
        """Leave sleep mode and buffer again."""
        if self.state is not CameraState.SLEEPING:
            decision = Decision(accepted=False, reason="not sleeping")
        else:
            self._move(CameraState.BUFFERING, now, "woken")
            self.outbox.mode_change(self._utc(now), "sleep", enabled=False, source="button")
            decision = Decision(accepted=True, reason="buffering")
        self._trail.record("mode", now, mode="sleep", enabled=False, accepted=decision.accepted)
        return decision

    def set_utc(self, utc: datetime, source: ClockSource, now: float) -> None:
        """The clock learns UTC (from sync, GPS or a person): later timestamps use it."""
        before = self.clock.utc(now)
        self.clock.set(utc, now, source)
        self._trail.record("clock_set", now, source=source, previous_utc=before.isoformat())

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run next (battery thresholds), or None."""
        if self.state is CameraState.OFF:
            return None
        return self.battery.next_deadline()

    def handle_timeout(self, now: float) -> None:
        """Run what is due at ``now``."""
        if self.state is not CameraState.OFF:
            self._battery(now)

    # -- internals ----------------------------------------------------------------------------

    def _start_recording(
        self, trigger: Trigger, now: float, *, continuation: bool = False
    ) -> ActiveRecording:
        preroll = self.buffer.drain()
        start = RecordingStart(
            recording_id=self.store.new_recording_id(self._utc(now).strftime("%Y%m%dT%H%M%SZ")),
            trigger=trigger,
            requested_pre_roll_s=0.0 if continuation else preroll.requested_s,
            delivered_pre_roll_s=round(preroll.delivered_s, 6),
            pts0_mono_s=self._pts0_mono,
            pts0_utc=self.clock.utc(self._pts0_mono),
            clock_set=self.clock.is_set,
            started_pts_s=round(now - self._pts0_mono, 6),
        )
        recording = ActiveRecording(
            self.store, start, segment_s=self.policy.segment_s, device_id=self.device_id
        )
        self.recording = recording
        for closed in recording.write_pre_roll(preroll.packets, continuous=preroll.continuous):
            self._trail.segment_closed(closed, now)
        self._move(CameraState.RECORDING, now, f"activated by {trigger.kind}")
        self._trail.record(
            "recording_started",
            now,
            recording=start.recording_id,
            trigger=trigger.kind,
            source=trigger.source,
            requested_pre_roll_s=start.requested_pre_roll_s,
            delivered_pre_roll_s=start.delivered_pre_roll_s,
            pre_roll_limit=preroll.limit.value,
        )
        self.outbox.activation(self._utc(now), start)
        self._battery(now)
        return recording

    def _stop_recording(self, trigger: Trigger, reason: str | None, now: float) -> None:
        recording = self.recording
        assert recording is not None
        closed = recording.finish(trigger, reason)
        self._trail.segment_closed(closed, now)
        self._trail.record(
            "recording_stopped",
            now,
            recording=recording.recording_id,
            trigger=trigger.kind,
            source=trigger.source,
            reason=reason,
            segments=len(recording.totals.segments),
            bytes=recording.totals.bytes,
        )
        self.outbox.deactivation(self._utc(now), recording.recording_id, trigger, reason)
        self.finished.append(recording)
        self.recording = None
        self._post_event_end_pts = None
        self._pending_stop = None

    def _end_post_event(self, now: float) -> None:
        trigger, reason = self._pending_stop or (POLICY, None)
        self._stop_recording(trigger, reason, now)
        self._move(CameraState.BUFFERING, now, "post-event buffer ended")

    def _continue_in_new_recording(self, now: float) -> ActiveRecording:
        """Split a recording at its maximum length, at a keyframe, without losing a packet.

        A stop already requested (the post-event buffer running) carries over to the new one.
        """
        pending, post_event_end = self._pending_stop, self._post_event_end_pts
        self._stop_recording(POLICY, "maximum recording duration; continues in a new one", now)
        self._move(CameraState.BUFFERING, now, "maximum duration reached")
        self.buffer.clear()
        recording = self._start_recording(CONTINUATION, now, continuation=True)
        if pending is not None:
            self._pending_stop, self._post_event_end_pts = pending, post_event_end
            self._move(CameraState.POST_EVENT, now, "the requested stop carries over")
        return recording

    def _storage_full(self, now: float) -> None:
        used = self.store.used_bytes
        self._trail.record("storage_full", now, used_bytes=used, budget=self.policy.storage_bytes)
        self.outbox.fault(self._utc(now), "storage_full", "error", f"{used} bytes used")

    def _battery(self, now: float) -> None:
        for alert in self.battery.advance(now, _LOADS[self.state]):
            self._trail.record(alert.value, now, percent=round(self.battery.percent, 3))
            severity: FaultSeverity = "warning" if alert is BatteryAlert.LOW else "critical"
            self.outbox.fault(self._utc(now), alert.value, severity, "battery")
            if alert is BatteryAlert.EMPTY:
                if self.recording is not None:
                    self._stop_recording(BATTERY, "battery empty", now)
                self.buffer.clear()
                self._move(CameraState.OFF, now, "battery empty")
                self._checkpoint(now)

    def _checkpoint(self, now: float) -> None:
        """Sign the audit chain's head (when the log has the device key) and make it durable."""
        if self.audit.can_sign:
            self.audit.checkpoint(self._utc(now), round(now, 6))
        self.audit.sync()

    def _move(self, target: CameraState, now: float, reason: str) -> None:
        if target not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"camera cannot go from {self.state.value} to {target.value}")
        self._trail.record(
            "state", now, previous=self.state.value, state=target.value, reason=reason
        )
        self.state = target
        # The battery drains by state: charge the time so far at the old load, then switch.
        self.battery.switch(now, _LOADS[target])

    def _utc(self, now: float) -> datetime:
        return self.clock.utc(now)

    def _source(self) -> PayloadSource:
        assert self._media is not None, "power_on gives the camera its media source"
        return self._media


_LOADS: Final = {
    CameraState.OFF: Load.OFF,
    CameraState.SLEEPING: Load.SLEEP,
    CameraState.BUFFERING: Load.BUFFERING,
    CameraState.RECORDING: Load.RECORDING,
    CameraState.POST_EVENT: Load.RECORDING,
}
