"""Benchmark the 10-hour shift in virtual time, against the raw cost of storing the same bytes.

Usage: .venv/bin/python scripts/bench_shift.py [--scenario examples/shift-10h.toml] [--dir DIR]
       [--repeat 3] [--json]

Runs the scenario (as `bwc-sim scenario` does) into a fresh directory under DIR and prints its
speed-up over real time, and the CPU time of the camera's thread and of the I/O thread (on an
idle 2-core machine the wall time approaches the larger of the two). As a baseline in the same
run and directory it writes the same number of bytes in 4 MiB blocks with SHA-256 (what any store
of that evidence must at least do), so the ratio shows what the simulation adds over the storage
floor. DIR defaults to /dev/shm (tmpfs) when it exists: this VM's ext4 page-cache write path alone
takes several seconds for a few GB, which measures the host, not the simulator; pass --dir /tmp
to see it. Each of the --repeat rounds runs the scenario, then the floor; the table shows the best
of the rounds.

``--json`` prints one JSON object instead (progress goes to stderr): the settings (``scenario``,
``dir``, ``repeat``), ``virtual_s``, and one value per round of ``wall_s``, ``stored_bytes``, the
two threads' CPU seconds, ``floor_s``, both speed-ups and ``ratio`` (the run's speed-up over the
floor's, that is floor / wall: ours / baseline, as in the other scripts' JSON; the table's ratio
is its inverse); ``best`` (the table's figures); ``machine``, ``measured`` and
``load_average_before_after``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import load_scenario
from sim.tuning import tune_allocator

BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the scenario."""

    wall_s: float
    stored_bytes: int
    virtual_s: float
    camera_thread_cpu_s: float
    io_thread_cpu_s: float


def run_scenario(path: Path, parent: Path) -> Run:
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
        return Run(wall, int(stored), scenario.duration_s, main_cpu, io_cpu)
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


def log(text: str) -> None:
    """A progress line on stderr."""
    print(text, file=sys.stderr, flush=True)


def quiet(_text: str) -> None:
    """No progress: the table alone, as before ``--json`` existed."""


def bench(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """``--repeat`` rounds of the scenario then its storage floor, with the settings."""
    load = [os.getloadavg()[0]]
    runs: list[Run] = []
    floors: list[float] = []
    for i in range(args.repeat):
        run = run_scenario(args.scenario, args.dir)
        # The floor right after its run, on the bytes that run stored: a round's two figures
        # share the machine's state, so their ratio does not drift with the load of the box.
        floors.append(storage_floor(run.stored_bytes, args.dir))
        runs.append(run)
        say(f"round {i + 1}/{args.repeat}: wall {run.wall_s:.2f} s, floor {floors[-1]:.2f} s")
    load.append(os.getloadavg()[0])
    virtual = runs[0].virtual_s
    walls = [run.wall_s for run in runs]
    best = min(runs, key=lambda run: run.wall_s)
    return {
        "scenario": str(args.scenario),
        "dir": str(args.dir),
        "repeat": args.repeat,
        "virtual_s": virtual,
        "stored_bytes": [run.stored_bytes for run in runs],
        "wall_s": walls,
        "camera_thread_cpu_s": [run.camera_thread_cpu_s for run in runs],
        "io_thread_cpu_s": [run.io_thread_cpu_s for run in runs],
        "floor_s": floors,
        "speed_up": [virtual / w for w in walls],
        "floor_speed_up": [virtual / f for f in floors],
        "ratio": [f / w for w, f in zip(walls, floors, strict=True)],
        "best": {
            "wall_s": best.wall_s,
            "stored_bytes": best.stored_bytes,
            "camera_thread_cpu_s": best.camera_thread_cpu_s,
            "io_thread_cpu_s": best.io_thread_cpu_s,
            "floor_s": min(floors),
            "speed_up": virtual / best.wall_s,
            "floor_speed_up": virtual / min(floors),
            "wall_over_floor": best.wall_s / min(floors),
        },
        "load_average_before_after": load,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def print_table(report: dict[str, Any]) -> None:
    """The best round's figures."""
    best, virtual = report["best"], report["virtual_s"]
    print(f"scenario   {report['scenario']} into {report['dir']} (best of {report['repeat']})")
    print(f"virtual    {virtual:10.0f} s")
    print(f"stored     {best['stored_bytes'] / 1e9:10.2f} GB")
    print(f"wall       {best['wall_s']:10.2f} s   speed-up over real time {best['speed_up']:,.0f}x")
    print(
        f"cpu        {best['camera_thread_cpu_s']:10.2f} s   camera thread; "
        f"{best['io_thread_cpu_s']:.2f} s I/O thread (hash, writes)"
    )
    print(f"floor      {best['floor_s']:10.2f} s   write + SHA-256 of the same bytes, 4 MiB blocks")
    print(f"ratio      {best['wall_over_floor']:10.2f}     simulation / storage floor")


def main() -> int:
    """Print the table, or with ``--json`` one JSON object; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=Path("examples/shift-10h.toml"))
    default_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    parser.add_argument("--dir", type=Path, default=default_dir)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    tune_allocator()  # as the bwc-sim command line does
    report = bench(args, log if args.json else quiet)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
