"""The benchmark suite: every benchmark script, one table, each figure beside its own baseline.

Usage: .venv/bin/python scripts/bench.py [--quick] [--only upload,prebuffer,latency,shift,fleet]
       [--json]

Runs each script below as a child process, one after the other, reads its figures (the one JSON
object it prints with ``--json``), and prints one Markdown table on stdout: figure, ours,
baseline, ours / baseline, and the command that reproduces the figure (the script prints the same
figures, with more detail, without ``--json``). Every baseline was measured by the same script in
the same run as the figure beside it.

* upload (``scripts/bench_upload.py``): the verified upload of a real recording through
  mosquitto, MB/s at 64 KiB chunks and at 1 MiB (``UploadConfig``'s default ``chunk_size``);
  baseline ``mosquitto_pub`` to ``mosquitto_sub``, the same bytes in the same chunks.
* prebuffer (``scripts/bench_prebuffer.py``): ``PreEventBuffer.push`` MB/s at 720p30 and
  1080p30; baseline a numpy slice copy of the same payload bytes into a preallocated ring.
* latency (``scripts/bench_latency.py``): trigger latency p50 and p99, a double press written by
  the fake bench MCU on a pty to the camera recording; baseline one frame's one-way trip over the
  same pty and link, and the raw pty round trip.
* shift (``scripts/bench_shift.py``): the 10-hour shift's speed-up over real time in virtual
  time; baseline the storage floor (writing and SHA-256ing the same bytes) as a speed-up.
* fleet (``scripts/bench_fleet.py``): cameras per core at real time, CPU and idle RSS per camera,
  threads, errors, with 5 % of the cameras recording and with none; baseline thread-per-device
  paho-mqtt clients sending the same telemetry.

Ratios are ours / baseline, so above 1 is better for rates and speed-ups and worse for latency,
CPU and memory. Where a script repeats, the figure is the median and the range follows in
brackets, and the ratio is the median (range) of each repeat's ratio to the baseline of the same
repeat (run without ``--json``, ``bench_prebuffer`` and ``bench_shift`` print the best of their
repeats instead). ``--quick`` passes each script its smallest settings (a smoke run: the figures
are noisier and the fleet is 200 cameras for 30 s). A script that is missing or fails gives a row
saying so, and the others still run; the exit status is then 1. The load average before and
after each script is printed under the table. Progress (the running script's last stderr line)
goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ".venv/bin/python"
DEFAULT_CHUNK = 1 << 20  # device.uploads.UploadConfig().chunk_size


@dataclass(slots=True)
class Row:
    """One line of the table."""

    figure: str
    ours: str
    baseline: str
    ratio: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bench:
    """A benchmark script, its arguments (normal and ``--quick``), and how to read its ``--json``
    object."""

    name: str
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    parse: Callable[[str], list[Row]]


def spread(values: Sequence[float], fmt: str) -> str:
    """The median, and the range in brackets when there are several values."""
    mid = statistics.median(values)
    if len(values) == 1:
        return format(mid, fmt)
    return f"{format(mid, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


# -- the readers, one per script -------------------------------------------------------------


def parse_upload(out: str) -> list[Row]:
    report = json.loads(out)
    rows = []
    for row in report["rows"]:
        chunk = row["chunk_size"]
        if chunk % (1 << 20) == 0:
            label = f"{chunk >> 20} MiB"
        else:
            label = f"{chunk >> 10} KiB" if chunk % 1024 == 0 else f"{chunk:,} B"
        if chunk == DEFAULT_CHUNK:
            label += " (UploadConfig's default)"
        rows.append(
            Row(
                f"upload, verified, MB/s, {label} chunks (median of {report['repeat']})",
                spread(row["ours_mb_s"], ".0f"),
                spread(row["c_clients_mb_s"], ".0f") + " (mosquitto_pub -> mosquitto_sub)",
                spread(row["ratio"], ".2f"),
                {k: row[k] for k in ("chunk_size", "ours_mb_s", "c_clients_mb_s", "ratio")},
            )
        )
    return rows


def parse_prebuffer(out: str) -> list[Row]:
    report = json.loads(out)
    rows = []
    for row in report["rows"]:
        mb_s = row["mb_s"]
        packets_s = statistics.median(row["packets_s"]["push"])
        rows.append(
            Row(
                f"pre-event buffer push, MB/s, {row['profile']} (median of {report['repeat']})",
                f"{spread(mb_s['push'], ',.0f')} ({packets_s / 1e3:,.0f}k packets/s)",
                f"{spread(mb_s['copy'], ',.0f')} (numpy copy of the same payloads)",
                spread(row["ratio"], ".2f"),
                {k: row[k] for k in ("profile", "packets", "bytes", "mb_s", "packets_s", "ratio")},
            )
        )
    return rows


def parse_latency(out: str) -> list[Row]:
    report = json.loads(out)
    ms = report["ms"]
    press, frame = ms["press"], ms["frame_one_way"]
    rows = [
        Row(
            f"trigger latency {p}, ms, double press -> RECORDING over a pty (n={press['n']})",
            f"{press[p]:.1f}",
            f"{frame[p]:.2f} (one frame's one-way trip)",
            f"{press[p] / frame[p]:.1f}",
            {"press": press, "frame_one_way": frame},
        )
        for p in ("p50", "p99")
    ]
    if "raw_rtt" in ms:
        raw = ms["raw_rtt"]
        rows.append(
            Row(
                "trigger latency p50, ms, against the raw pty round trip",
                f"{press['p50']:.1f}",
                f"{raw['p50']:.2f} (raw pty round trip, no protocol)",
                f"{press['p50'] / raw['p50']:.1f}",
                {"raw_rtt": raw},
            )
        )
    if "press_minus_debounce" in ms:
        less = ms["press_minus_debounce"]
        rows.append(
            Row(
                f"trigger latency p50 less the {report['debounce_ms']:g} ms debounce, ms",
                f"{less['p50']:.1f}",
                f"{frame['p50']:.2f} (one frame's one-way trip)",
                f"{less['p50'] / frame['p50']:.1f}",
                {"press_minus_debounce": less},
            )
        )
    return rows


def parse_shift(out: str) -> list[Row]:
    report = json.loads(out)
    stored_gb = statistics.median(report["stored_bytes"]) / 1e9
    return [
        Row(
            f"10-hour shift, speed-up over real time ({stored_gb:.2f} GB stored; median of "
            f"{report['repeat']})",
            f"{spread(report['speed_up'], ',.0f')}; wall {spread(report['wall_s'], '.2f')} s",
            f"{spread(report['floor_speed_up'], ',.0f')}; {spread(report['floor_s'], '.2f')} s "
            "(write + SHA-256 of the same bytes)",
            spread(report["ratio"], ".2f"),
            {
                k: report[k]
                for k in ("virtual_s", "stored_bytes", "wall_s", "floor_s", "speed_up", "ratio")
            },
        )
    ]


def parse_fleet(out: str) -> list[Row]:
    report = json.loads(out)
    summary = report["summary"]
    ratios, recording = summary["ratios"], summary.get("recording_ratios", {})
    cameras, base, ours = report["cameras"], summary["baseline"], summary["ours"]

    def paho(key: str, fmt: str, scale: float = 1.0) -> str:
        return spread([v * scale for v in base[key]], fmt) + " (paho, a thread per device)"

    def errors(name: str) -> str:
        return f"{spread(summary[name]['errors'], '.0f')} errors"

    rows = []
    if "ours_recording" in summary:
        rec = summary["ours_recording"]
        rows.append(
            Row(
                f"fleet, {cameras:,} cameras, {report['recording_fraction']:.0%} recording and "
                "uploading: CPU, % of one core (mid-run)",
                f"{spread(rec['cpu_percent'], '.1f')} ({errors('ours_recording')})",
                paho("cpu_percent", ".1f") + ", telemetry only",
                spread(recording["cpu_percent"], ".2f"),
                rec,
            )
        )
        rows.append(
            Row(
                f"fleet, {report['recording_fraction']:.0%} recording: idle RSS per camera; RSS "
                "growth per camera at the end, KiB",
                f"{spread([v / 1024 for v in rec['idle_rss_per_camera_bytes']], '.1f')}; "
                f"{spread([v / 1024 for v in rec['rss_growth_per_camera_bytes']], '.1f')}",
                f"{paho('idle_rss_per_camera_bytes', '.1f', 1 / 1024)}; "
                f"{spread([v / 1024 for v in base['rss_growth_per_camera_bytes']], '.1f')}",
                f"{spread(recording['idle_rss_per_camera_bytes'], '.2f')}; "
                f"{spread(recording['rss_growth_per_camera_bytes'], '.2f')}",
            )
        )
    rows += [
        Row(
            f"fleet, {cameras:,} cameras, telemetry only: cameras per core at real time",
            f"{spread(ours['cameras_per_core'], ',.0f')} ({errors('ours')})",
            paho("cameras_per_core", ",.0f"),
            spread(ratios["cameras_per_core"], ".2f"),
            ours,
        ),
        Row(
            "fleet, CPU per camera, ms/s (mid-run, telemetry only)",
            spread(ours["cpu_ms_per_s_per_camera"], ".3f"),
            paho("cpu_ms_per_s_per_camera", ".3f"),
            spread(ratios["cpu_ms_per_s_per_camera"], ".2f"),
        ),
        Row(
            "fleet, idle RSS per camera, KiB",
            spread([v / 1024 for v in ours["idle_rss_per_camera_bytes"]], ".1f"),
            paho("idle_rss_per_camera_bytes", ".1f", 1 / 1024),
            spread(ratios["idle_rss_per_camera_bytes"], ".2f"),
        ),
        Row(
            "fleet, OS threads",
            spread(ours["threads"], ",.0f"),
            paho("threads", ",.0f"),
            spread(ratios["threads"], ".3f"),
        ),
    ]
    return rows


BENCHES = (
    Bench(
        name="upload",
        script="scripts/bench_upload.py",
        args=("--chunk-sizes", "65536,1048576"),
        quick_args=("--chunk-sizes", "65536,1048576", "--size-mb", "50", "--repeat", "1"),
        parse=parse_upload,
    ),
    Bench(
        name="prebuffer",
        script="scripts/bench_prebuffer.py",
        args=(),
        quick_args=("--seconds", "30", "--repeat", "1"),
        parse=parse_prebuffer,
    ),
    Bench(
        name="latency",
        script="scripts/bench_latency.py",
        args=(),
        quick_args=("--quick",),
        parse=parse_latency,
    ),
    Bench(
        name="shift",
        script="scripts/bench_shift.py",
        args=(),
        quick_args=("--repeat", "1"),
        parse=parse_shift,
    ),
    Bench(
        name="fleet",
        script="scripts/bench_fleet.py",
        args=(),
        quick_args=("--quick",),
        parse=parse_fleet,
    ),
)


# -- running them ----------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One script's run: its rows, or why there are none."""

    bench: Bench
    command: str
    rows: list[Row] = field(default_factory=list)
    problem: str | None = None
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    stderr_tail: list[str] = field(default_factory=list)


async def run_bench(bench: Bench, quick: bool, progress: Progress) -> Outcome:
    args = bench.quick_args if quick else bench.args
    shown = shlex.join([PYTHON, bench.script, *args])
    outcome = Outcome(bench, shown)
    if not (ROOT / bench.script).exists():
        outcome.problem = f"not available: {bench.script} does not exist"
        return outcome
    command = [sys.executable, bench.script, *args, "--json"]
    task = progress.add_task(f"{bench.name}: starting", total=None)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None

    async def follow(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                outcome.stderr_tail = [*outcome.stderr_tail[-19:], line]
                progress.update(task, description=f"{bench.name}: {line.strip()[:100]}")

    follower = asyncio.create_task(follow(proc.stderr))
    out = (await proc.stdout.read()).decode()
    await proc.wait()
    await follower
    progress.remove_task(task)
    outcome.seconds = time.perf_counter() - started
    outcome.load = (load_before, os.getloadavg()[0])
    try:
        outcome.rows = bench.parse(out)
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
        why = outcome.stderr_tail[-1] if outcome.stderr_tail else f"{type(exc).__name__} {exc}"
        outcome.problem = f"failed (exit {proc.returncode}): {why.strip()}"
        return outcome
    if proc.returncode != 0:
        outcome.problem = f"exit {proc.returncode} (errors counted in its figures; see its output)"
    return outcome


async def run_all(benches: Sequence[Bench], quick: bool) -> list[Outcome]:
    console = Console(file=sys.stderr)
    outcomes = []
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        for bench in benches:
            outcome = await run_bench(bench, quick, progress)
            state = outcome.problem or f"{len(outcome.rows)} figure(s)"
            progress.console.print(f"{bench.name}: {state} ({outcome.seconds:.0f} s)")
            outcomes.append(outcome)
    return outcomes


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def print_table(outcomes: Sequence[Outcome], quick: bool, started: dt.datetime) -> None:
    minutes = sum(o.seconds for o in outcomes) / 60
    print(
        f"bwc-sim benchmark suite{' (--quick)' if quick else ''}, started "
        f"{started.isoformat(timespec='seconds')}, {minutes:.0f} min; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print("| figure | ours | baseline (same run) | ours / baseline | command |")
    print("|---|---|---|---|---|")
    for outcome in outcomes:
        command = f"`{outcome.command}`"
        for row in outcome.rows:
            cells = (row.figure, row.ours, row.baseline, row.ratio)
            print("| " + " | ".join(cell(c) for c in cells) + f" | {command} |")
        if outcome.problem and not outcome.rows:
            print(f"| {outcome.bench.name} | {cell(outcome.problem)} | | | {command} |")
    print()
    for outcome in outcomes:
        if outcome.problem and outcome.rows:
            print(f"{outcome.bench.name}: {outcome.problem}")
        if outcome.seconds:
            before, after = outcome.load
            print(
                f"{outcome.bench.name}: {outcome.seconds:.0f} s, load average (1 min) "
                f"{before:.2f} before, {after:.2f} after"
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [bench.name for bench in BENCHES]
    parser.add_argument("--quick", action="store_true", help="each script's smallest settings")
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=names,
        metavar="NAME[,NAME]",
        help=f"run only these, in the suite's order ({', '.join(names)})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {names}")
    return args


def main() -> int:
    args = parse_args()
    benches = [bench for bench in BENCHES if bench.name in args.only]
    started = dt.datetime.now(dt.UTC)
    outcomes = asyncio.run(run_all(benches, args.quick))
    if args.json:
        report = {
            "quick": args.quick,
            "started": started.isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "benchmarks": [
                {
                    "name": o.bench.name,
                    "command": o.command,
                    "problem": o.problem,
                    "seconds": o.seconds,
                    "load_average_before_after": list(o.load),
                    "rows": [
                        {
                            "figure": r.figure,
                            "ours": r.ours,
                            "baseline": r.baseline,
                            "ratio": r.ratio,
                            "values": r.values,
                        }
                        for r in o.rows
                    ],
                }
                for o in outcomes
            ],
        }
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(outcomes, args.quick, started)
    return 1 if any(o.problem for o in outcomes) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
