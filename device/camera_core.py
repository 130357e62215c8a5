"""The camera core: power, media, the recording's start and stop, timers, battery and storage.

``Camera`` (``device/camera.py``) adds the requests a trigger, a person or a command makes.

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
from device.camera_audit import CameraAudit, Decision, policy_fields, rules_fields
from device.camera_events import EventOutbox
from device.clock import DeviceClock
from device.decide import (
    Act,
    RecordingContext,
    StopRequest,
    StopSource,
)
from device.indications import Indicator, Signal, Timers
from device.packets import Packet, PayloadSource, Stream
from device.policy import RecordingPolicy
from device.prebuffer import PreEventBuffer
from device.recording import ActiveRecording, RecordingStart
from device.rules import PolicyRules
from device.store import ClosedSegment, EvidenceStore
from device.triggers import TriggerLevels
from protocol.common import Trigger
from protocol.errors import LocalProtocolError
from protocol.vocabulary import FaultSeverity


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

_RECORDING_STATES: Final = frozenset({CameraState.RECORDING, CameraState.POST_EVENT})
_STOP_SOURCES: Final = {"remote": StopSource.REMOTE, "peer": StopSource.PEER}


class CameraCore:
    """The camera's state and its internal moves; ``Camera`` adds the requests."""

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
        rules: PolicyRules | None = None,
    ) -> None:
        self.device_id = device_id
        self.policy = policy
        self.rules = rules if rules is not None else PolicyRules()
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
        self.levels = TriggerLevels()
        self.context: RecordingContext | None = None
        self.indicator = Indicator()
        self.timers = Timers()
        self.muted = False
        self._awaiting_confirmation: tuple[StopRequest, Trigger] | None = None
        self._prompt_for: str | None = None
        self.position: tuple[float, float] | None = None
        """The last GPS fix (latitude, longitude), for peer broadcasts' range check."""
        self._master_of: str | None = None
        self.critical: dict[str, float] = {}
        """Recordings given a critical-incident category: their upload deadline (monotonic)."""

    # -- power --------------------------------------------------------------------------------

    def power_on(self, now: float, media: PayloadSource) -> list[ClosedSegment]:
        """Boot: recover what a crash left open, then buffer. Media pts 0 is ``now``."""
        if self.state is not CameraState.OFF:
            return []
        self._boots += 1
        # The audit log's sequence number never repeats on a device, across restarts too.
        self.outbox.boot_tag = f"b{self.audit.next_seq}"
        self._trail.record("power_on", now, boot=self._boots, clock_set=self.clock.is_set)
        recovery = self.store.recover()
        for code, where in self._trail.recovery(recovery, self.store.root, now):
            self.outbox.fault(self._utc(now), code, "warning", where)
        self._trail.record("config", now, **policy_fields(self.policy))
        self._trail.record("rules", now, **rules_fields(self.rules))
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
        if self._prompt_for is not None:
            self._category_default(now, why="the camera was switched off during the prompt")
        self.buffer.clear()
        self._move(CameraState.OFF, now, reason)
        self._forget_inputs()
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
        self._forget_inputs()

    def _forget_inputs(self) -> None:
        """Inputs, timers and prompts do not survive power: they are read afresh at boot."""
        self.levels.clear()
        self.timers.clear()
        self.context = None
        self._awaiting_confirmation = None
        self._prompt_for = None
        self._master_of = None
        self.muted = False
        self.indicator.stealth = False

    # -- media --------------------------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        """The encoder's next packet (pts order)."""
        if self.muted and packet.stream is Stream.AUDIO:
            return  # mute mode: no audio is buffered or recorded
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
        if recording.pre_roll_pending:
            self.write_pre_roll(self._pts0_mono + packet.pts_s)
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

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run next (battery, reminders, prompts), or None."""
        if self.state is CameraState.OFF:
            return None
        battery, timer = self.battery.next_deadline(), self.timers.next()
        if battery is None or timer is None:
            return battery if timer is None else timer
        return min(battery, timer)

    def handle_timeout(self, now: float) -> None:
        """Run what is due at ``now``."""
        if self.state is CameraState.OFF:
            return
        self._battery(now)
        for name in self.timers.pop_due(now):
            if name == "confirm_stop":
                self._confirmation_expired(now)
            elif name == "category_prompt":
                self._category_default(now, why="the category prompt timed out")
            elif name == "recording_reminder":
                self._remind(
                    Signal.RECORDING_REMINDER, name, self.rules.modes.recording_reminder_s, now
                )
            elif name == "sleep_reminder":
                self._remind(Signal.SLEEP_REMINDER, name, self.rules.modes.sleep_reminder_s, now)

    def _confirmation_expired(self, now: float) -> None:
        pending, self._awaiting_confirmation = self._awaiting_confirmation, None
        if pending is not None:
            request, trigger = pending
            self._trail.trigger(
                "confirm_stop",
                trigger,
                Decision(accepted=False, reason="stop not confirmed in time: recording continues"),
                now,
                act=Act.REFUSE.value,
                stated_reason=request.reason,
            )

    def _category_default(self, now: float, *, why: str) -> None:
        recording_id, self._prompt_for = self._prompt_for, None
        self.timers.cancel("category_prompt")
        default = self.rules.categories.default
        self._trail.record(
            "categorized",
            now,
            recording=recording_id,
            categories=[default],
            case_id=None,
            source="default",
            accepted=True,
            decision=f"{why}: default category {default!r}",
        )

    def _remind(self, signal: Signal, timer: str, interval: float, now: float) -> None:
        indication = self.indicator.signal(signal, now)
        self._trail.record("reminder", now, signal=signal.value, silent=indication.silent)
        self.timers.set(timer, now + interval)

    def _schedule_reminders(self, now: float) -> None:
        """Recording reminders run while recording, sleep reminders while asleep."""
        modes = self.rules.modes
        if self.state in _RECORDING_STATES and modes.recording_reminder_s > 0:
            if self.timers.get("recording_reminder") is None:
                self.timers.set("recording_reminder", now + modes.recording_reminder_s)
        else:
            self.timers.cancel("recording_reminder")
        if self.state is CameraState.SLEEPING and modes.sleep_reminder_s > 0:
            if self.timers.get("sleep_reminder") is None:
                self.timers.set("sleep_reminder", now + modes.sleep_reminder_s)
        else:
            self.timers.cancel("sleep_reminder")

    # -- internals ----------------------------------------------------------------------------

    def _start_recording(
        self, trigger: Trigger, now: float, *, continuation: bool = False
    ) -> ActiveRecording:
        # Emptied now; its copies are made and written right after the start is shown.
        preroll, take_pre_roll = self.buffer.drain_later()
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
        # The state, and what the officer sees and hears, first; the bulk copy and write right
        # after: before the next live packet, marker or stop (``write_pre_roll``), or sooner when
        # the caller, having shown the start, calls it.
        recording.defer_pre_roll(take_pre_roll)
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
        self.indicator.signal(Signal.RECORDING_STARTED, now)
        self._battery(now)
        return recording

    def _stop_recording(
        self, trigger: Trigger, reason: str | None, now: float, *, continuing: bool = False
    ) -> None:
        recording = self.recording
        assert recording is not None
        self.write_pre_roll(now)
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
        self.indicator.signal(Signal.RECORDING_STOPPED, now)
        self.finished.append(recording)
        self.recording = None
        self._post_event_end_pts = None
        self._pending_stop = None
        self._awaiting_confirmation = None
        self.timers.cancel("confirm_stop")
        if not continuing:
            self.context = None
            if self._master_of is not None:
                self.outbox.peer_deactivation(self._utc(now), self._master_of, reason)
                self._master_of = None
            self._prompt_category(recording, now)

    def write_pre_roll(self, now: float) -> None:
        """Write the pre-roll of the recording just started if it is still pending (segments it
        fills are closed and audited at ``now``); nothing otherwise. Cheap to call often."""
        recording = self.recording
        if recording is not None and recording.pre_roll_pending:
            for closed in recording.write_deferred_pre_roll():
                self._trail.segment_closed(closed, now)

    def _prompt_category(self, recording: ActiveRecording, now: float) -> None:
        """After a stop, ask for a category; the default applies if none comes in time."""
        if self._prompt_for is not None:
            self._category_default(
                now, why="a new recording stopped before the prompt was answered"
            )
        if not self.rules.categories.prompt or recording.categories:
            return
        self._prompt_for = recording.recording_id
        self.timers.set("category_prompt", now + self.rules.categories.prompt_timeout_s)
        self.indicator.signal(Signal.CATEGORY_PROMPT, now)
        self._trail.record(
            "category_prompt",
            now,
            recording=recording.recording_id,
            timeout_s=self.rules.categories.prompt_timeout_s,
        )

    def _end_post_event(self, now: float) -> None:
        trigger, reason = self._pending_stop or (POLICY, None)
        self._stop_recording(trigger, reason, now)
        self._move(CameraState.BUFFERING, now, "post-event buffer ended")

    def _continue_in_new_recording(self, now: float) -> ActiveRecording:
        """Split a recording at its maximum length, at a keyframe, without losing a packet.

        A stop already requested (the post-event buffer running) carries over to the new one.
        """
        pending, post_event_end = self._pending_stop, self._post_event_end_pts
        self._stop_recording(
            POLICY, "maximum recording duration; continues in a new one", now, continuing=True
        )
        self._move(CameraState.BUFFERING, now, "maximum duration reached")
        self.buffer.clear()
        recording = self._start_recording(CONTINUATION, now, continuation=True)
        self.write_pre_roll(now)  # none: the buffer was cleared, and live packets follow on
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
        self._schedule_reminders(now)

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
