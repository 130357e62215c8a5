"""A child process for the crash tests: writes forever, reporting durable progress on stdout.

``python -m tests.crashchild segment PATH EVERY`` appends media records to a new segment with a
small write buffer (so torn records reach the file), fsyncs every EVERY records and then prints
how many records are durable. ``python -m tests.crashchild audit PATH`` appends audit records,
fsynced one by one, printing each seq once it is durable. The parent SIGKILLs it at a moment of
its choosing; every number printed before the kill must survive.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

from device.audit import AuditLog
from device.recordfile import RecordWriter
from device.recordformat import SegmentHeader

HEADER = SegmentHeader("cam-crash", "rec-crash", 0)
START = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def packet_payload(index: int) -> bytes:
    """Deterministic packet bytes of varying length, so the parent can check every record."""
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (1 + index % 40)


def _segment(path: Path, every: int) -> None:
    with RecordWriter(path, HEADER, buffer_size=512) as writer:
        index = 0
        while True:
            writer.append_media(
                stream=index % 2,
                packet_index=index,
                pts_us=index * 20_000,
                duration_us=20_000,
                keyframe=index % 30 == 0,
                data=packet_payload(index),
            )
            index += 1
            if index % every == 0:
                writer.flush(sync=True)
                print(writer.synced_records, flush=True)


def _audit(path: Path) -> None:
    with AuditLog.open(path, "cam-crash", utc=START, mono_s=0.0) as log:
        step = 0
        while True:
            step += 1
            record = log.append("tick", START, float(step), step=step, pad="x" * (step % 300))
            print(record.seq, flush=True)


def main(argv: list[str]) -> None:
    """Run the mode named by ``argv[1]`` until killed."""
    if argv[1] == "segment":
        _segment(Path(argv[2]), int(argv[3]))
    else:
        _audit(Path(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
