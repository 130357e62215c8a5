"""The evidence store's index computed the slow way, as the store did before it kept one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from device.store import RECORDINGS_DIR, SEGMENT_SUFFIX, SegmentKey, manifest_path

_SEGMENT = re.compile(r"^seg-(\d{6})\.bwcseg$")
_SEQ = re.compile(r"^r(\d{6})-")


@dataclass(frozen=True, slots=True)
class FullScan:
    """Closed segments by key, bytes of every segment file, highest recording sequence."""

    closed: dict[SegmentKey, Path]
    used: int
    last_seq: int


def full_scan(root: Path) -> FullScan:
    """Glob ``root/recordings`` and test each manifest: the reference for ``EvidenceStore``."""
    base = root / RECORDINGS_DIR
    files = sorted(base.glob(f"*/*{SEGMENT_SUFFIX}"))
    closed = {
        (path.parent.name, int(match.group(1))): path
        for path in files
        if (match := _SEGMENT.match(path.name)) and manifest_path(path).exists()
    }
    sequences = [int(m.group(1)) for entry in base.iterdir() if (m := _SEQ.match(entry.name))]
    return FullScan(closed, sum(path.stat().st_size for path in files), max(sequences, default=0))
