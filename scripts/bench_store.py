"""Benchmark the evidence store's index against the full scans it replaced, in the same run.

Usage: .venv/bin/python scripts/bench_store.py [--sizes 100 1000] [--dir /tmp] [--json]

For a store of N closed segments (10 per recording) it times, per call (median of rounds):
  refresh idle      UploadManager.refresh with nothing new (the daemon's poll, once a second)
  refresh close     refresh after one segment closed (the path after every segment close)
  new_recording_id  EvidenceStore.new_recording_id (the trigger path)
  open              EvidenceStore(...) on the existing directory: its one scan, at start-up,
                    which also builds the index (the baseline only summed the file sizes)
against the full-scan baselines, the code these replaced: refresh globbed ``*/*.bwcseg`` and
tested each manifest (plus, after a close, read the new manifest), new_recording_id listed the
recordings directory, and the store summed every segment file's size when it opened. ``ratio`` is
baseline / index (above 1: the index is faster). The "refresh close" rows are single timed calls
(median of N/20 rounds, at least 5); the others the median of 7 rounds of repeated calls.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.identity import DeviceIdentity
from device.segmentmeta import SegmentClosing, SegmentStart
from device.store import RECORDINGS_DIR, SEGMENT_SUFFIX, EvidenceStore, manifest_path
from device.uploads import UploadConfig, UploadManager
from protocol.topics import Topics

DEVICE = "bench-store"
PER_RECORDING = 10
_SEGMENT = re.compile(r"^seg-(\d{6})\.bwcseg$")
_SEQ = re.compile(r"^r(\d{6})-")


def per_call(action: Callable[[], object], rounds: int = 7, budget_s: float = 0.05) -> float:
    """Median seconds per call of ``action`` over ``rounds`` rounds of about ``budget_s``."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            action()
        if time.perf_counter() - start >= budget_s / 10 or calls >= 1 << 20:
            break
        calls *= 4
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            action()
        results.append((time.perf_counter() - start) / calls)
    return statistics.median(results)


def close_segment(store: EvidenceStore, recording: str, index: int) -> None:
    """Open and close an empty segment (a METADATA record and a signed manifest)."""
    start = SegmentStart(
        device=DEVICE,
        recording=recording,
        index=index,
        start_trigger="button",
        trigger_source="front",
        requested_pre_roll_s=0.0,
        delivered_pre_roll_s=0.0,
        pts0_mono_s=0.0,
        pts0_utc=datetime(2026, 11, 29, 14, 0, tzinfo=UTC),
        clock_set=True,
        opened_pts_s=float(index),
    )
    store.close_segment(store.open_segment(start), SegmentClosing())


def fill(store: EvidenceStore, segments: int) -> None:
    """``segments`` closed segments, ``PER_RECORDING`` per recording."""
    recording = ""
    for n in range(segments):
        if n % PER_RECORDING == 0:
            recording = store.new_recording_id("20261129T140000Z")
        close_segment(store, recording, n % PER_RECORDING)


# -- the full scans the index replaced -----------------------------------------------------------


def scan_closed(base: Path) -> set[tuple[str, int]]:
    """What ``refresh`` did on every call: glob every segment, test its manifest, key it."""
    present = set()
    for path in sorted(base.glob(f"*/*{SEGMENT_SUFFIX}")):
        if manifest_path(path).exists() and (match := _SEGMENT.match(path.name)):
            present.add((path.parent.name, int(match.group(1))))
    return present


def scan_recording_id(base: Path) -> str:
    """What ``new_recording_id`` did: list the recordings directory."""
    sequences = [int(m.group(1)) for entry in base.iterdir() if (m := _SEQ.match(entry.name))]
    return f"r{max(sequences, default=0) + 1:06d}-20261129T140000Z"


def scan_used(base: Path) -> int:
    """What opening the store did: the size of every segment file."""
    return sum(path.stat().st_size for path in base.glob(f"*/*{SEGMENT_SUFFIX}"))


# -- one size ------------------------------------------------------------------------------------


def measure(root: Path, segments: int) -> dict[str, dict[str, float]]:
    """Per-call seconds of each operation, ours and the baseline's, at ``segments``."""
    identity = DeviceIdentity.load_or_create(root, DEVICE, seed=1)
    store = EvidenceStore(root, identity, durable=False)
    fill(store, segments)
    base = root / RECORDINGS_DIR
    config = UploadConfig(durable=False, rescan_s=float("inf"))
    manager = UploadManager(
        store, root / "uploads", device_id=DEVICE, topics=Topics(), config=config
    )
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    manager.refresh(tick())
    extra = store.new_recording_id("20261129T140000Z")
    closed = [0]

    def close() -> None:
        close_segment(store, extra, closed[0])
        closed[0] += 1

    def scan_then_load() -> None:
        scan_closed(base)
        store.load_closed(store.closed_index()[(extra, closed[0] - 1)])

    rows = {
        "refresh idle": (lambda: manager.refresh(tick()), lambda: scan_closed(base)),
        "new_recording_id": (
            lambda: store.new_recording_id("20261129T140000Z"),
            lambda: scan_recording_id(base),
        ),
        "open": (lambda: EvidenceStore(root, identity, durable=False), lambda: scan_used(base)),
    }
    out = {
        name: {"index_s": per_call(ours), "scan_s": per_call(baseline)}
        for name, (ours, baseline) in rows.items()
    }
    # Each round closes a segment (not timed), then times the refresh; then another, then the
    # scan and manifest read it replaces. Few rounds: the store grows by 5 % at most.
    index_times, scan_times = [], []
    for _ in range(max(segments // 20, 5)):
        close()
        index_times.append(timed(lambda: manager.refresh(tick())))
        close()
        scan_times.append(timed(scan_then_load))
    out["refresh close"] = {
        "index_s": statistics.median(index_times),
        "scan_s": statistics.median(scan_times),
    }
    manager.refresh(tick())
    assert manager.progress().queued_segments == len(store.closed_index()) == len(scan_closed(base))
    return out


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--dir", type=Path, help="where the stores go (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as work:
            results[str(size)] = measure(Path(work), size)
    if args.json:
        print(json.dumps({"sizes": results}, sort_keys=True))
        return 0
    print(f"{'segments':>8}  {'operation':<17} {'index':>10} {'full scan':>10} {'ratio':>8}")
    for size, rows in results.items():
        for name, row in rows.items():
            ratio = row["scan_s"] / row["index_s"]
            print(
                f"{size:>8}  {name:<17} {row['index_s'] * 1e6:>8.1f}us "
                f"{row['scan_s'] * 1e6:>8.1f}us {ratio:>7.1f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
