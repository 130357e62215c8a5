"""A virtual-time model of docking and upload, for scenarios: when would each segment be verified?

A scenario's ``upload`` action docks the camera: every closed segment not uploaded before is sent
at the dock's bandwidth, most urgent first (critical-incident recordings, then oldest), one after
another. Only the timing is modelled; the protocol itself (chunks, acknowledgements, the receiver's
verification) runs for real in ``bwc-sim run`` and the upload tests. The compliance report uses
the times to check the expedited-upload deadline of critical incidents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from device.store import ClosedSegment


class UplinkModel:
    """When each segment finished uploading, in scenario seconds."""

    def __init__(self) -> None:
        self.finished: dict[tuple[str, int], float] = {}
        self._busy_until = 0.0

    def dock(
        self,
        now: float,
        bandwidth_mbps: float,
        segments: Iterable[ClosedSegment],
        critical: Mapping[str, float],
    ) -> None:
        """Dock at ``now`` and send what is waiting at ``bandwidth_mbps`` (megabits per second)."""
        waiting = [
            segment
            for segment in segments
            if (segment.manifest.recording, segment.manifest.index) not in self.finished
        ]
        waiting.sort(
            key=lambda seg: (
                seg.manifest.recording not in critical,
                seg.manifest.start_monotonic_s,
                seg.manifest.recording,
                seg.manifest.index,
            )
        )
        clock = max(now, self._busy_until)
        bytes_per_s = bandwidth_mbps * 1e6 / 8
        for segment in waiting:
            clock += segment.manifest.size / bytes_per_s
            self.finished[(segment.manifest.recording, segment.manifest.index)] = round(clock, 6)
        self._busy_until = clock

    def verified_at(self, recording: str, indexes: Iterable[int]) -> float | None:
        """When the last of a recording's segments was verified; None unless all of them were."""
        times = [self.finished.get((recording, index)) for index in indexes]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)
