"""One scan of the evidence store's ``recordings`` directory: the index ``EvidenceStore`` keeps.

The store builds its index (closed segments, bytes of segment files, the highest recording
sequence) from one listing of each recording directory at start-up and on ``rescan``; its own
operations keep the index current after that (see ``device.store``). A segment is closed when
its manifest is beside it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from device.durable import storage_error

SEGMENT_SUFFIX: Final = ".bwcseg"
MANIFEST_SUFFIX: Final = ".manifest.json"
_SEGMENT_NAME = re.compile(r"^seg-(\d{6})\.bwcseg$")
RECORDING_SEQ = re.compile(r"^r(\d{6})-")
"""A recording ID's sequence number (``r000042-...``)."""

SegmentKey = tuple[str, int]
"""(recording ID, segment index): how the device names a segment."""


@dataclass(slots=True)
class StoreScan:
    """What one scan of ``recordings`` found: closed segments, bytes used, last sequence."""

    closed: dict[SegmentKey, Path] = field(default_factory=dict)
    used: int = 0
    last_seq: int = 0


def scan_store(directory: Path, skip: set[Path]) -> StoreScan:
    """The index of ``directory`` (``recordings``); files in ``skip`` (open ones) use no bytes."""
    scan = StoreScan()
    skipped = {os.fspath(path) for path in skip}
    try:
        with os.scandir(directory) as recordings:
            for recording in recordings:
                if match := RECORDING_SEQ.match(recording.name):
                    scan.last_seq = max(scan.last_seq, int(match.group(1)))
                if recording.is_dir():
                    _scan_recording(directory / recording.name, skipped, scan)
    except OSError as exc:
        raise storage_error("scanning", directory, exc) from exc
    return scan


def _scan_recording(directory: Path, skip: set[str], scan: StoreScan) -> None:
    with os.scandir(directory) as listing:
        entries = {entry.name: entry for entry in listing}
    for name, entry in entries.items():
        if not name.endswith(SEGMENT_SUFFIX):
            continue
        if entry.path not in skip:
            scan.used += entry.stat().st_size
        match = _SEGMENT_NAME.match(name)
        if match and name.removesuffix(SEGMENT_SUFFIX) + MANIFEST_SUFFIX in entries:
            scan.closed[(directory.name, int(match.group(1)))] = directory / name
