"""The upload queue: which closed segment to upload next.

Order: recordings with a critical-incident category first (those with an upload deadline from
``camera.critical`` by deadline, then those whose manifest says ``critical``), then the oldest:
the manifest's start time, then recording ID, then segment index. A segment that failed for a
transient reason waits out its back-off (``not_before``) while the others go ahead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from device.store import ClosedSegment
from device.uploads.model import SegmentStatus

SegmentKey = tuple[str, int]
"""(recording ID, segment index): how the device names a segment."""


@dataclass(slots=True)
class QueueEntry:
    """One closed segment waiting for a verified upload."""

    segment: ClosedSegment
    upload_id: str
    status: SegmentStatus = SegmentStatus.QUEUED
    failures: int = 0
    """Consecutive failed attempts; reset by none (a verified upload removes the entry)."""
    not_before: float = -math.inf
    """Monotonic time before which no new attempt starts (back-off). Not persisted."""
    last_code: str | None = None

    @property
    def key(self) -> SegmentKey:
        """(recording, index) of the segment."""
        return (self.segment.manifest.recording, self.segment.manifest.index)

    @property
    def size(self) -> int:
        """The segment's size in bytes, from its manifest."""
        return self.segment.manifest.size


class UploadQueue:
    """Segments not yet verified nor rejected, with their priority."""

    def __init__(self) -> None:
        self._entries: dict[SegmentKey, QueueEntry] = {}
        self._critical: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[QueueEntry]:
        return iter(self._entries.values())

    def get(self, key: SegmentKey) -> QueueEntry | None:
        """The entry for ``key``, if queued."""
        return self._entries.get(key)

    def add(self, entry: QueueEntry) -> None:
        """Queue a segment (replacing any entry with the same key)."""
        self._entries[entry.key] = entry

    def remove(self, key: SegmentKey) -> QueueEntry | None:
        """Take a segment off the queue (verified, rejected or gone)."""
        return self._entries.pop(key, None)

    def set_critical(self, deadlines: Mapping[str, float]) -> None:
        """Recording ID -> upload deadline (monotonic) of recordings with a critical category."""
        self._critical = dict(deadlines)

    def total_bytes(self) -> int:
        """Bytes of every queued segment."""
        return sum(entry.size for entry in self._entries.values())

    def priority(self, entry: QueueEntry) -> tuple[bool, float, datetime, str, int]:
        """Sort key: smaller goes first."""
        manifest = entry.segment.manifest
        deadline = self._critical.get(manifest.recording)
        critical = manifest.critical or deadline is not None
        return (
            not critical,
            math.inf if deadline is None else deadline,
            manifest.start_utc,
            manifest.recording,
            manifest.index,
        )

    def ordered(self) -> list[QueueEntry]:
        """Every entry, most urgent first (back-off ignored)."""
        return sorted(self._entries.values(), key=self.priority)

    def next_ready(self, now: float) -> QueueEntry | None:
        """The most urgent entry whose back-off is over at ``now``, if any."""
        ready = [entry for entry in self._entries.values() if entry.not_before <= now]
        return min(ready, key=self.priority, default=None)

    def next_retry(self) -> float | None:
        """The earliest time any entry may start, or ``None`` if the queue is empty."""
        return min((entry.not_before for entry in self._entries.values()), default=None)
