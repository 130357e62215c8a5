"""Benchmark the 10-hour shift in virtual time, against the raw cost of storing the same bytes.

Usage: .venv/bin/python scripts/bench_shift.py [--scenario examples/shift-10h.toml] [--dir DIR]
       [--repeat 3]

Runs the scenario (as `bwc-sim scenario` does) into a fresh directory under DIR and prints its
speed-up over real time, and the CPU time of the camera's thread and of the I/O thread (on an
idle 2-core machine the wall time approaches the larger of the two). As a baseline in the same
run and directory it writes the same number of bytes in 4 MiB blocks with SHA-256 (what any store
of that evidence must at least do), so the ratio shows what the simulation adds over the storage
floor. DIR defaults to /dev/shm (tmpfs) when it exists: this VM's ext4 page-cache write path alone
takes several seconds for a few GB, which measures the host, not the simulator; pass --dir /tmp
to see it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import load_scenario
from sim.tuning import tune_allocator

BLOCK = 4 * 1024 * 1024


def run_scenario(path: Path, parent: Path) -> tuple[float, int, float, float, float]:
    """Wall seconds, bytes stored, virtual seconds, and CPU seconds of the camera's thread and
    of the I/O thread, for one run."""
    out = Path(tempfile.mkdtemp(dir=parent)) / "store"
    try:
        scenario = load_scenario(path)
        started, thread_cpu, process_cpu = (
            time.perf_counter(),
            time.thread_time(),
            time.process_time(),
        )
        run = ScenarioRun(scenario, out)
        run.run()
        wall = time.perf_counter() - started
        main_cpu = time.thread_time() - thread_cpu
        io_cpu = time.process_time() - process_cpu - main_cpu
        stored = build_report(run)["totals"]["bytes"]
        return wall, int(stored), scenario.duration_s, main_cpu, io_cpu
    finally:
        shutil.rmtree(out.parent)


def storage_floor(total: int, parent: Path) -> float:
    """Seconds to write and SHA-256 ``total`` bytes in 4 MiB blocks (no fsync, like the run)."""
    block = os.urandom(BLOCK)
    target = Path(tempfile.mkdtemp(dir=parent)) / "floor.bin"
    digest = hashlib.sha256()
    started = time.perf_counter()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        left = total
        while left > 0:
            piece = block[: min(BLOCK, left)]
            digest.update(piece)
            os.write(fd, piece)
            left -= len(piece)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target.parent)
    return elapsed


def main() -> int:
    """Print the table; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=Path("examples/shift-10h.toml"))
    default_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    parser.add_argument("--dir", type=Path, default=default_dir)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tune_allocator()  # as the bwc-sim command line does
    runs = [run_scenario(args.scenario, args.dir) for _ in range(args.repeat)]
    wall, stored, virtual, main_cpu, io_cpu = min(runs)
    floor = min(storage_floor(stored, args.dir) for _ in range(args.repeat))
    print(f"scenario   {args.scenario} into {args.dir} (best of {args.repeat})")
    print(f"virtual    {virtual:10.0f} s")
    print(f"stored     {stored / 1e9:10.2f} GB")
    print(f"wall       {wall:10.2f} s   speed-up over real time {virtual / wall:,.0f}x")
    print(
        f"cpu        {main_cpu:10.2f} s   camera thread; {io_cpu:.2f} s I/O thread (hash, writes)"
    )
    print(f"floor      {floor:10.2f} s   write + SHA-256 of the same bytes, 4 MiB blocks")
    print(f"ratio      {wall / floor:10.2f}     simulation / storage floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
