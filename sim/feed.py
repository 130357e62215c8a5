"""Feeds a camera its encoder's packets in virtual time, making only packets someone keeps.

While the camera is off or asleep nothing is made; while it only buffers, packets older than the
buffer could hold are skipped (``MediaSource.skip_to`` is O(1)), which leaves the buffer exactly as
if it had been fed all along. So a 10-hour shift costs what its recordings cost.

A *lazy* feed (``FeedOptions.lazy``, for fleets of live cameras) goes one step further: while the
camera only buffers, ``advance`` does nothing at all, and the buffer is filled by ``settle``, which
the runner calls right before anything that can read it (a timeline entry, a sensor input, a
camera deadline, a command). Filling it then is exact for the same reason, so an idle camera makes
no packet and holds no buffer until something happens to it; once nothing is due for a while it
forgets the buffer again (``forget``). A recording camera is fed in batches (``next_time`` asks to
be woken every ``batch_s``), and the arena its drained buffer leaves is given back
(``PreEventBuffer.release``).
"""

from __future__ import annotations

from dataclasses import dataclass

from device.camera import Camera, CameraState
from device.validate import check_bool, check_number
from sim.media import MediaSource

_SKIP_MARGIN_GOPS = 2
_RECORDING_STATES = frozenset({CameraState.RECORDING, CameraState.POST_EVENT})


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """How a run feeds media: eagerly (virtual time, ``bwc-sim run``) or lazily (fleets).

    ``batch_s``: with ``lazy``, how often (camera seconds) a recording camera is fed.
    ``filler_seed``: the seed of the payload filler block (``sim.media.MediaSource``); ``None``
    keeps each camera's own, a fleet passes one so its cameras share one block.
    ``forget_after_s``: with ``lazy``, a buffering camera with nothing due for this long
    forgets its buffer (``MediaFeed.forget``).
    """

    lazy: bool = False
    batch_s: float = 0.5
    filler_seed: int | None = None
    forget_after_s: float = 5.0

    def __post_init__(self) -> None:
        check_bool("feed", "lazy", self.lazy)
        check_number("feed", "batch_s", self.batch_s, 0.001, 60.0, integer=False)
        check_number("feed", "forget_after_s", self.forget_after_s, 0.0, 1e9, integer=False)
        if self.filler_seed is not None:
            check_number("feed", "filler_seed", self.filler_seed, 0, 2**128, integer=True)


class MediaFeed:
    """The encoder of one camera for one power cycle; media pts 0 is ``pts0_mono``."""

    def __init__(
        self, camera: Camera, media: MediaSource, pts0_mono: float, *, lazy: bool = False
    ) -> None:
        self.camera = camera
        self.media = media
        self.pts0_mono = pts0_mono
        self.lazy = lazy
        self.packets_made = 0
        self.fed_to = pts0_mono
        """The camera time media was last delivered up to (or skipped to)."""
        self._skip_window_s = camera.policy.pre_event_s + _SKIP_MARGIN_GOPS * (
            media.video.gop_duration_s
        )

    def advance(self, now: float) -> None:
        """Deliver every packet with pts before ``now`` (monotonic) to the camera.

        A lazy feed delivers nothing while the camera only buffers (``settle`` does).
        """
        if self.lazy and self.camera.state is CameraState.BUFFERING:
            return
        self.settle(now)

    def settle(self, now: float) -> None:
        """Deliver every packet with pts before ``now``, the buffer's included (lazy or not)."""
        target = now - self.pts0_mono
        camera = self.camera
        state = camera.state
        self.fed_to = max(self.fed_to, now)
        if state is CameraState.OFF or state is CameraState.SLEEPING:
            self.media.skip_to(target)
            return
        if state is CameraState.BUFFERING:
            self.media.skip_to(self.media.gop_start_s(target - self._skip_window_s))
        made = 0
        for packet in self.media.packets_until(target):
            camera.on_packet(packet)
            made += 1
        self.packets_made += made
        if self.lazy and camera.state is CameraState.RECORDING:
            camera.buffer.release()  # drained: its pages are not needed until it buffers again

    def forget(self) -> None:
        """Lazy: drop an idle camera's buffer and give its memory back; ``settle`` rebuilds it.

        The buffer starts on a keyframe and a buffer fed all along would only ever start later,
        so moving the encoder back to that keyframe lets the next ``settle`` make exactly the
        buffer that was dropped, then trim it as feeding all along would have. Off or asleep, the
        buffer is empty: only its memory goes.
        """
        buffer = self.camera.buffer
        if not self.lazy or not buffer.allocated:
            return
        state = self.camera.state
        if state is CameraState.BUFFERING:
            first = buffer.first_pts_s
            buffer.clear()
            if first is not None:
                self.media.seek(first)
        elif state is not CameraState.OFF and state is not CameraState.SLEEPING:
            return
        buffer.release()

    def next_time(self, batch_s: float) -> float | None:
        """A lazy feed of a recording camera: when its next batch is due (else None)."""
        if self.lazy and self.camera.state in _RECORDING_STATES:
            return self.fed_to + batch_s
        return None
