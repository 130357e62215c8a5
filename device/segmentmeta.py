"""What a segment says about itself in its first record, and how a manifest is built from it.

The first record of every segment is a METADATA record holding everything a manifest needs that
the media records cannot tell: the recording's trigger and pre-roll, and the anchor that maps
media time to monotonic and UTC time. A segment recovered after a crash is described from its own
file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from device.errors import EvidenceError
from protocol.ids import SafeId, UtcTime
from protocol.manifest import SegmentManifest, SegmentStatus


class SegmentStart(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The METADATA record at the start of a segment.

    ``pts0_mono_s`` and ``pts0_utc`` are the monotonic and UTC times of media pts 0 (the moment
    the encoder started), so any pts converts to both. ``opened_pts_s`` is the media time the
    segment was opened at, used for the times of a segment that holds no media.
    """

    v: int = 1
    device: SafeId
    recording: SafeId
    index: int
    start_trigger: str
    trigger_source: str
    requested_pre_roll_s: float
    delivered_pre_roll_s: float
    pts0_mono_s: float
    pts0_utc: UtcTime
    clock_set: bool
    opened_pts_s: float
    categories: tuple[str, ...] = ()
    case_id: str | None = None
    critical: bool = False

    def encode(self) -> bytes:
        """The record body."""
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes, where: str) -> SegmentStart:
        """Parse a METADATA record; ``EvidenceError`` naming ``where`` if it is not one."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.MsgspecError as exc:
            raise EvidenceError(f"{where}: first record is not segment metadata: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SegmentClosing:
    """What the recorder knows when it closes a segment.

    ``stop_trigger``/``stop_reason`` only on a recording's last segment; ``categories`` and
    ``case_id`` replace the ones known at the segment's start (they are often assigned while
    recording); ``critical`` marks the segment critical even if it was not at its start.
    """

    stop_trigger: str | None = None
    stop_reason: str | None = None
    categories: tuple[str, ...] | None = None
    case_id: str | None = None
    critical: bool = False


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    """How a segment ended: its file (bytes, hash, records, media span) and the closing facts."""

    status: SegmentStatus
    size: int
    sha256: str
    records: int
    first_pts_us: int | None
    end_us: int | None
    closing: SegmentClosing


def build_manifest(start: SegmentStart, end: SegmentEnd, key_id: str) -> SegmentManifest:
    """The manifest of a closed segment (to be signed by the device key)."""
    first_s = start.opened_pts_s if end.first_pts_us is None else end.first_pts_us / 1e6
    stop_s = first_s if end.end_us is None else end.end_us / 1e6
    return SegmentManifest(
        device=start.device,
        recording=start.recording,
        index=start.index,
        status=end.status,
        size=end.size,
        sha256=end.sha256,
        records=end.records,
        start_utc=_utc(start.pts0_utc, first_s),
        stop_utc=_utc(start.pts0_utc, stop_s),
        start_monotonic_s=round(start.pts0_mono_s + first_s, 6),
        stop_monotonic_s=round(start.pts0_mono_s + stop_s, 6),
        clock_set=start.clock_set,
        start_trigger=start.start_trigger,
        stop_trigger=end.closing.stop_trigger,
        stop_reason=end.closing.stop_reason,
        requested_pre_roll_s=start.requested_pre_roll_s,
        delivered_pre_roll_s=start.delivered_pre_roll_s,
        categories=start.categories if end.closing.categories is None else end.closing.categories,
        case_id=end.closing.case_id or start.case_id,
        critical=start.critical or end.closing.critical,
        key_id=key_id,
    )


def _utc(pts0_utc: datetime, pts_s: float) -> datetime:
    return pts0_utc + timedelta(microseconds=round(pts_s * 1e6))
