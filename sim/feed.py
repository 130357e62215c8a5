"""Feeds a camera its encoder's packets in virtual time, making only packets someone keeps.

While the camera is off or asleep nothing is made; while it only buffers, packets older than the
buffer could hold are skipped (``MediaSource.skip_to`` is O(1)), which leaves the buffer exactly as
if it had been fed all along. So a 10-hour shift costs what its recordings cost.
"""

from __future__ import annotations

from device.camera import Camera, CameraState
from sim.media import MediaSource

_SKIP_MARGIN_GOPS = 2


class MediaFeed:
    """The encoder of one camera for one power cycle; media pts 0 is ``pts0_mono``."""

    def __init__(self, camera: Camera, media: MediaSource, pts0_mono: float) -> None:
        self.camera = camera
        self.media = media
        self.pts0_mono = pts0_mono
        self.packets_made = 0
        self._skip_window_s = camera.policy.pre_event_s + _SKIP_MARGIN_GOPS * (
            media.video.gop_duration_s
        )

    def advance(self, now: float) -> None:
        """Deliver every packet with pts before ``now`` (monotonic) to the camera."""
        target = now - self.pts0_mono
        camera = self.camera
        state = camera.state
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
