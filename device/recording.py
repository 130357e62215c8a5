"""One recording in progress: its segments, keyframe alignment, rollover and closing.

The recording starts with the pre-event buffer's packets and continues with live ones, without a
gap or a duplicate. Segments are cut at video keyframes once ``segment_s`` of media is in the
current one, so every segment plays on its own. Before its first video keyframe a recording keeps
nothing (a clip that starts on a P-frame plays as garbage).

The pre-roll (up to the whole pre-event buffer, 30 s of video) may be taken and written a moment
after the start (``defer_pre_roll``, then ``write_deferred_pre_roll``): the camera shows that it
is recording first, and drains and writes the buffer right after, before any live packet, marker
or close, which refuse to run while it is pending. Until then it stays in the buffer, in memory,
where it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from device.packets import BufferedPacket, Packet, PayloadSource, Stream
from device.prebuffer import PreRoll
from device.segmentmeta import SegmentClosing, SegmentStart
from device.store import ClosedSegment, EvidenceStore, OpenSegment
from protocol.common import Trigger
from protocol.errors import LocalProtocolError


@dataclass(frozen=True, slots=True)
class RecordingStart:
    """Everything fixed when a recording starts."""

    recording_id: str
    trigger: Trigger
    requested_pre_roll_s: float
    delivered_pre_roll_s: float
    pts0_mono_s: float
    pts0_utc: datetime
    clock_set: bool
    started_pts_s: float


@dataclass(slots=True)
class RecordingTotals:
    """What a recording wrote, for reports and reminders."""

    packets: int = 0
    bytes: int = 0
    skipped_before_keyframe: int = 0
    first_video_keyframe: bool | None = None
    segments: list[ClosedSegment] = field(default_factory=list)


class ActiveRecording:
    """Writes one recording's packets into segments of the evidence store."""

    def __init__(
        self,
        store: EvidenceStore,
        start: RecordingStart,
        *,
        segment_s: float,
        device_id: str,
    ) -> None:
        self.start = start
        self.totals = RecordingTotals()
        self.categories: tuple[str, ...] = ()
        self.case_id: str | None = None
        self.critical = False
        self._store = store
        self._segment_s = segment_s
        self._device_id = device_id
        self._index = 0
        self._segment: OpenSegment = self._open(start.started_pts_s)
        self._segment_video_start: float | None = None
        self._awaiting_keyframe = True
        self._deferred: Callable[[], PreRoll] | None = None

    @property
    def recording_id(self) -> str:
        """The recording's ID."""
        return self.start.recording_id

    @property
    def segment_index(self) -> int:
        """Index of the segment being written."""
        return self._index

    @property
    def pre_roll_pending(self) -> bool:
        """Whether a deferred pre-roll still waits to be written."""
        return self._deferred is not None

    def defer_pre_roll(self, take: Callable[[], PreRoll]) -> None:
        """Write the pre-roll later: ``write_deferred_pre_roll`` calls ``take`` (the pre-event
        buffer's drain, copies included) and writes what it returns."""
        if self._deferred is not None or self.totals.packets:
            raise LocalProtocolError("the pre-roll goes first, once")
        self._deferred = take

    def write_deferred_pre_roll(self) -> list[ClosedSegment]:
        """Write the deferred pre-roll, if any (``write_pre_roll``)."""
        take, self._deferred = self._deferred, None
        if take is None:
            return []
        preroll = take()
        return self.write_pre_roll(preroll.packets, continuous=preroll.continuous)

    def write_pre_roll(
        self, packets: tuple[BufferedPacket, ...], *, continuous: bool
    ) -> list[ClosedSegment]:
        """Write the drained pre-event buffer, cut into segments like live media; returns the
        segments that closed. ``continuous`` false means live video must wait for its next
        keyframe (the buffer's last GOP was cut)."""
        if self._deferred is not None:
            raise LocalProtocolError("a deferred pre-roll is pending")
        closed = []
        for buffered in packets:
            packet = buffered.packet
            if (
                packet.keyframe
                and packet.stream is Stream.VIDEO
                and self._segment_full(packet.pts_s)
            ):
                closed.append(self._roll(packet.pts_s))
            self._write(packet, buffered.payload)
        if packets and not continuous:
            self._awaiting_keyframe = True
        return closed

    def append(self, packet: Packet, source: PayloadSource) -> ClosedSegment | None:
        """Write a live packet; returns the segment closed by a rollover, if one was."""
        if self._deferred is not None:
            raise LocalProtocolError("write the deferred pre-roll before live packets")
        if not packet.keyframe or packet.stream is not Stream.VIDEO:
            # The hot path: every packet but one per GOP.
            if self._awaiting_keyframe:
                self.totals.skipped_before_keyframe += 1
                return None
            totals = self.totals
            self._segment.append(packet, source.payload(packet))
            totals.packets += 1
            totals.bytes += packet.size
            return None
        closed = self._roll(packet.pts_s) if self._segment_full(packet.pts_s) else None
        self._write(packet, source.payload(packet))
        return closed

    def _write(self, packet: Packet, payload: bytes) -> None:
        video = packet.stream is Stream.VIDEO
        if video:
            if self.totals.first_video_keyframe is None:
                self.totals.first_video_keyframe = packet.keyframe
            if packet.keyframe:
                self._awaiting_keyframe = False
                if self._segment_video_start is None:
                    self._segment_video_start = packet.pts_s
        self._segment.append(packet, payload)
        self.totals.packets += 1
        self.totals.bytes += packet.size

    def _segment_full(self, pts_s: float) -> bool:
        start = self._segment_video_start
        return start is not None and pts_s - start >= self._segment_s

    def _roll(self, pts_s: float) -> ClosedSegment:
        closed = self._close_segment(None, None)
        self._index += 1
        self._segment = self._open(pts_s)
        self._segment_video_start = None
        return closed

    def mark(self, document: bytes) -> None:
        """Write a MARKER record into the current segment."""
        if self._deferred is not None:
            raise LocalProtocolError("write the deferred pre-roll before a marker")
        self._segment.append_marker(document)

    def durable_position(self) -> tuple[Path, int]:
        """The open segment's file and how many of its records have reached a sync point."""
        writer = self._segment.writer
        return writer.path, writer.synced_records

    def abandon(self) -> None:
        """Drop the open segment as a power loss would: what reached storage stays."""
        self._segment.lose_power()

    def finish(self, stop_trigger: Trigger, reason: str | None) -> ClosedSegment:
        """Close the last segment with the recording's stop trigger and reason."""
        if self._deferred is not None:
            raise LocalProtocolError("write the deferred pre-roll before closing")
        return self._close_segment(stop_trigger.kind, reason)

    def _close_segment(self, stop_trigger: str | None, reason: str | None) -> ClosedSegment:
        closing = SegmentClosing(
            stop_trigger=stop_trigger,
            stop_reason=reason,
            categories=self.categories,
            case_id=self.case_id,
            critical=self.critical,
        )
        closed = self._store.close_segment(self._segment, closing)
        self.totals.segments.append(closed)
        return closed

    def _open(self, opened_pts_s: float) -> OpenSegment:
        start = self.start
        return self._store.open_segment(
            SegmentStart(
                device=self._device_id,
                recording=start.recording_id,
                index=self._index,
                start_trigger=start.trigger.kind,
                trigger_source=start.trigger.source,
                requested_pre_roll_s=start.requested_pre_roll_s,
                delivered_pre_roll_s=start.delivered_pre_roll_s,
                pts0_mono_s=start.pts0_mono_s,
                pts0_utc=start.pts0_utc,
                clock_set=start.clock_set,
                opened_pts_s=opened_pts_s,
                categories=self.categories,
                case_id=self.case_id,
                critical=self.critical,
            )
        )
