"""A plain reference model of the camera core, for tests/test_recorder_stateful.py.

It is fed the same packets as a real ``Camera`` and says what the pre-event buffer must hold and
what each recording must contain, from the documented rules (docs/camera.md, device/recording.py):
lists instead of rings, clarity over speed. Storage-full and battery stops are not modelled (the
test gives the camera plenty of both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from device.camera import CameraState
from device.packets import Packet, Stream
from device.policy import RecordingPolicy
from sim.media import MediaSource


def is_keyframe(packet: Packet) -> bool:
    """A video keyframe (audio packets are all flagged keyframes but open nothing)."""
    return packet.stream is Stream.VIDEO and packet.keyframe


class ReferenceBuffer:
    """The pre-event buffer's push, evict and trim rule on a list (docs/camera.md, steps 1-5)."""

    def __init__(self, policy: RecordingPolicy) -> None:
        config = policy.buffer_config()
        self.seconds = config.seconds
        self.max_bytes = config.max_bytes
        self.max_packets = config.packet_capacity
        self.keep_audio = config.keep_audio
        self.held: list[Packet] = []
        self.gop_open = False
        self.refused = False  # OVERSIZE or OVERFLOW since the buffer last emptied: a hole

    def considers(self, packet: Packet) -> bool:
        """Whether the buffer looks at ``packet`` at all (audio only when it keeps audio)."""
        return packet.stream is Stream.VIDEO or self.keep_audio

    def push(self, packet: Packet) -> None:
        video = packet.stream is Stream.VIDEO
        if not self.considers(packet):
            return
        if packet.size > self.max_bytes:
            self._refuse(video=video)
            return
        if not ((packet.keyframe or self.gop_open) if video else self.held):
            return
        while (
            sum(p.size for p in self.held) + packet.size > self.max_bytes
            or len(self.held) >= self.max_packets
        ):
            cut = self._second_keyframe()
            if cut is None and not is_keyframe(packet):
                self._refuse(video=video)
                return
            self.held = self.held[cut:] if cut is not None else []
        self.held.append(packet)
        self.gop_open = self.gop_open or is_keyframe(packet)
        while (cut := self._second_keyframe()) is not None and (
            packet.end_s - self.held[cut].pts_s >= self.seconds
        ):
            self.held = self.held[cut:]

    def _second_keyframe(self) -> int | None:
        return next((i for i in range(1, len(self.held)) if is_keyframe(self.held[i])), None)

    def _refuse(self, *, video: bool) -> None:
        self.gop_open = self.gop_open and not video
        self.refused = True

    @property
    def delivered_s(self) -> float:
        """The newest held packet's end minus the first held keyframe's pts."""
        return self.held[-1].end_s - self.held[0].pts_s if self.held else 0.0

    def clear(self) -> None:
        self.held, self.gop_open, self.refused = [], False, False


def allowance_s(relevant: list[Packet], max_bytes: int, max_packets: int) -> float:
    """Longest span from a video keyframe to the newest packet whose packets fit the bounds."""
    used, start = 0, None
    for count, packet in enumerate(reversed(relevant), start=1):
        used += packet.size
        if used > max_bytes or count > max_packets:
            break
        start = packet.pts_s if is_keyframe(packet) else start
    return 0.0 if start is None else relevant[-1].end_s - start


@dataclass
class Expected:
    """What one recording must contain, and the facts its pre-roll is judged by."""

    source: MediaSource
    start_trigger: str
    activated_pts_s: float  # media time of the activation (now - pts0), or of the split keyframe
    started_pts_s: float  # as the camera rounds it
    requested_s: float
    delivered_s: float
    history_s: float  # newest considered packet's end minus the pts buffering started at
    allowance_s: float
    preroll_refused: bool
    preroll_len: int
    packets: list[Packet] = field(default_factory=list)
    awaiting: bool = True
    skipped: int = 0
    stop_trigger: str | None = None
    recording_id: str | None = None  # learnt from the activation event

    @property
    def continuation(self) -> bool:
        return self.start_trigger == "policy"


class ModelCamera:
    """The camera's states and recording stream, driven by the same calls and packets."""

    def __init__(self, policy: RecordingPolicy) -> None:
        self.policy = policy
        self.state = CameraState.OFF
        self.buffer = ReferenceBuffer(policy)
        self.relevant: list[Packet] = []  # packets the buffer considered since buffering began
        self.buffering_since_s = 0.0
        self.pts0 = 0.0
        self.source: MediaSource | None = None
        self.recording: Expected | None = None
        self.started: list[Expected] = []
        self.finished: list[Expected] = []
        self.post_end_s: float | None = None

    # -- requests, each returning whether the camera must accept it ------------------------------

    def power_on(self, now: float, source: MediaSource) -> bool:
        if self.state is not CameraState.OFF:
            return False
        self.pts0, self.source = now, source
        self._buffer_from(0.0)
        return True

    def power_off(self) -> None:
        if self.recording is not None:
            self._stop("power")
        self.buffer.clear()
        self.state = CameraState.OFF

    def activate(self, now: float) -> bool:
        if self.state is CameraState.POST_EVENT:
            self.post_end_s = None
            self.state = CameraState.RECORDING
            return True
        if self.state is not CameraState.BUFFERING:
            return False
        self._start("button", now - self.pts0, round(now - self.pts0, 6), continuation=False)
        return True

    def deactivate(self, now: float) -> bool:
        if self.state is not CameraState.RECORDING:
            return False
        if self.policy.post_event_s > 0:
            self.post_end_s = (now - self.pts0) + self.policy.post_event_s
            self.state = CameraState.POST_EVENT
        else:
            self._stop("button")
            self._buffer_from(now - self.pts0)
        return True

    def sleep(self) -> bool:
        if self.state is not CameraState.BUFFERING:
            return False
        self.buffer.clear()
        self.state = CameraState.SLEEPING
        return True

    def wake(self, now: float) -> bool:
        if self.state is not CameraState.SLEEPING:
            return False
        self._buffer_from(now - self.pts0)
        return True

    # -- media --------------------------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        state = self.state
        if state is CameraState.POST_EVENT:
            assert self.post_end_s is not None
            if packet.pts_s >= self.post_end_s:
                self._stop("button")
                self._buffer_from(packet.pts_s)
                state = CameraState.BUFFERING
        if state is CameraState.BUFFERING:
            self.buffer.push(packet)
            if self.buffer.considers(packet):
                self.relevant.append(packet)
        elif state is CameraState.RECORDING or state is CameraState.POST_EVENT:
            self._record(packet)

    def _record(self, packet: Packet) -> None:
        recording = self.recording
        assert recording is not None
        if is_keyframe(packet) and (
            packet.pts_s - recording.started_pts_s >= self.policy.max_recording_s
        ):
            # The split is invisible to the user: a pending post-event stop still applies.
            state, post_end_s = self.state, self.post_end_s
            self._stop("policy")
            # The camera stamps it at now = pts0 + pts: started_pts_s = round(now - pts0, 6).
            started = round((self.pts0 + packet.pts_s) - self.pts0, 6)
            recording = self._start("policy", packet.pts_s, started, continuation=True)
            self.state, self.post_end_s = state, post_end_s
        if recording.awaiting and not is_keyframe(packet):
            recording.skipped += 1
            return
        recording.awaiting = recording.awaiting and not is_keyframe(packet)
        recording.packets.append(packet)

    # -- internals ------------------------------------------------------------------------------

    def _buffer_from(self, pts_s: float) -> None:
        self.buffer.clear()
        self.relevant = []
        self.buffering_since_s = pts_s
        self.state = CameraState.BUFFERING

    def _start(
        self, trigger: str, activated_pts_s: float, started_pts_s: float, *, continuation: bool
    ) -> Expected:
        buffer, relevant = self.buffer, self.relevant
        assert self.source is not None
        recording = Expected(
            source=self.source,
            start_trigger=trigger,
            activated_pts_s=activated_pts_s,
            started_pts_s=started_pts_s,
            requested_s=0.0 if continuation else buffer.seconds,
            delivered_s=round(buffer.delivered_s, 6),
            history_s=max((p.end_s for p in relevant), default=self.buffering_since_s)
            - self.buffering_since_s,
            allowance_s=allowance_s(relevant, buffer.max_bytes, buffer.max_packets),
            preroll_refused=buffer.refused,
            preroll_len=len(buffer.held),
            packets=list(buffer.held),
            awaiting=not buffer.held or not buffer.gop_open,
        )
        buffer.clear()
        self.relevant = []
        self.recording = recording
        self.started.append(recording)
        self.state = CameraState.RECORDING
        return recording

    def _stop(self, trigger: str) -> None:
        assert self.recording is not None
        self.recording.stop_trigger = trigger
        self.finished.append(self.recording)
        self.recording = None
        self.post_end_s = None
