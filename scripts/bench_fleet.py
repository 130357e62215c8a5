"""Benchmark the fleet: cameras per core and RSS per camera, against thread-per-device paho clients.

Usage: .venv/bin/python scripts/bench_fleet.py [--count 1000] [--duration 120]
       [--recording-fraction 0.05] [--telemetry-interval 10] [--repeat 1] [--quick] [--json]

One after the other, each against a fresh private mosquitto 2 on loopback (``PrivateBroker``,
the same config each time: persistence off, ``max_connections -1``; RLIMIT_NOFILE raised to the
hard limit first, so the broker inherits it; fresh, so no run inherits another's sessions), each
with the same N, telemetry interval and duration:

* ours, the must-show: ``bwc-sim fleet --count N --duration S --recording-fraction 0.05
  --telemetry-interval 10 --broker URL --receiver embedded --json``: N cameras (the real camera
  of ``bwc-sim run``: buffering, telemetry, audit log) on one event loop in one worker process,
  5 % of them recording and uploading to the evidence receiver the fleet embeds in its parent
  process (so the worker holds only the cameras, and its CPU and RSS are the cameras');
* ours, like for like: the same with ``--recording-fraction 0 --receiver none``: the cameras
  buffer and send telemetry; besides, each publishes its status at connect and at the end and
  its audit log (QoS 1, unanswered here), as any connected camera does;
* the baseline: ``scripts/fleet_baseline.py`` with the same N, its telemetry padded to the median
  size of the cameras' (measured in this run): one thread and one paho-mqtt client (with its
  ``loop_start`` network thread) per device, in processes of 250 (paho's ``select()`` cannot go
  past ~340 clients a process). It sends telemetry only: it buffers no video and records
  nothing, so the ratios take ours' telemetry-only run; the 5 % run is shown beside it.

The main CPU figure is measured from outside, the same way for all: every 2 s, from ``/proc``,
the CPU seconds of each process of the contender's tree; "CPU mid-run" is the CPU of the
processes that hold the cameras (ours: the fleet's worker; the baseline: its workers, or its one
process at 250 devices or fewer) from 25 % to 90 % of the run (after every camera connected,
before the shutdown), as a percentage of one core, in ms per second per camera, and as cameras
per core at real time (N over that fraction of a core). The fleet's parent (live view, embedded
receiver) is shown apart. Also from outside: the threads and RSS of the tree (RSS over N is then
"whole": interpreters, imports and, for ours, the parent with its receiver), the tree's CPU over
its whole life (``getrusage`` of the reaped child), the broker's CPU over the run, and the
telemetry a subscriber of this script receives (``bwc/v1/dev/+/telemetry``, QoS 0), so telemetry
lost on the way shows.

As each contender reports them about itself (``--json``):

* CPU, steady: ours ``idle_cpu_per_core_percent`` (up to one telemetry interval, from 2 s after
  the last connect, before any recording); the baseline the whole ``--duration`` window after
  its last connect;
* CPU, whole run: from the first connect to the end of the duration, connects and recordings
  included (ours: ``cpu_per_core_percent``; the baseline: start-up plus window over their time);
* idle RSS per camera: the processes' RSS once every camera is connected (and before any
  recording) less their RSS before the first camera was made, over N; RSS growth per camera at
  the end of the run, the same way;
* errors, by kind; ours also the recordings, and the segments and bytes the receiver verified.

The load average is printed before and after each run. Data directories and the receiver's
store go to DIR (/dev/shm). Progress on stderr. Exit 1 when any run had an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.broker import PrivateBroker

ROOT = Path(__file__).resolve().parent.parent
TELEMETRY_FILTER = "bwc/v1/dev/+/telemetry"
QUICK_COUNT, QUICK_DURATION = 200, 30.0
BASELINE = ROOT / "scripts" / "fleet_baseline.py"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pid_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants now (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(parents.get(pid, []))
    return tree


@dataclass(frozen=True, slots=True)
class Sample:
    """``root``'s process tree at one moment, ``t`` seconds after it was started."""

    t: float
    processes: int
    threads: int
    rss: int
    cpu: dict[int, float]  # CPU seconds so far, by process ID


def tree_sample(root: int, t: float) -> Sample:
    """Processes, threads, RSS bytes and CPU seconds of ``root``'s process tree."""
    processes = threads = rss = 0
    cpu: dict[int, float] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            status = Path(f"/proc/{pid}/status").read_text()
            cpu[pid] = pid_cpu(pid)
            processes += 1
            for line in status.splitlines():
                if line.startswith("Threads:"):
                    threads += int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
    return Sample(t, processes, threads, rss, cpu)


def mid_run_cpu(samples: list[Sample], root: int, wall: float) -> dict[str, float]:
    """CPU from 25 % to 90 % of the run, in % of one core: the root process, and the others.

    The others are the processes that hold the cameras (ours: the fleet's worker; the
    baseline's: its worker processes); the root is the fleet's parent (its live view and, when
    embedded, the receiver) or the baseline's idle parent; a baseline of 250 devices or fewer
    runs them in the root itself. Start-up and shutdown are left out.
    """
    window = [s for s in samples if 0.25 * wall <= s.t <= 0.9 * wall]
    if len(window) < 2:
        return {"window_s": 0.0, "cameras_cpu_percent": math.nan, "root_cpu_percent": math.nan}
    first, last = window[0], window[-1]
    span = last.t - first.t
    root_cpu = last.cpu.get(root, 0.0) - first.cpu.get(root, 0.0)
    if len(last.cpu) == 1:  # the baseline's devices all in its own process (250 or fewer)
        others, root_cpu = root_cpu, math.nan
    else:
        others = sum(cpu - first.cpu.get(pid, 0.0) for pid, cpu in last.cpu.items() if pid != root)
    return {
        "window_s": span,
        "cameras_cpu_percent": 100.0 * others / span,
        "root_cpu_percent": 100.0 * root_cpu / span,
    }


class TelemetryCounter:
    """A subscriber of every device's telemetry: how many messages, their sizes, from how many."""

    def __init__(self, host: str, port: int) -> None:
        self.messages = 0
        self.sizes: list[int] = []
        self.devices: set[str] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-fleet-counter",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(10):
            raise SystemExit("the telemetry counter could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(TELEMETRY_FILTER, qos=0)

    def _on_subscribe(self, *_: Any) -> None:
        self._ready.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages += 1
            if len(self.sizes) < 10_000:
                self.sizes.append(len(message.payload))
            self.devices.add(message.topic.split("/")[3])

    def close(self) -> dict[str, Any]:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            return {
                "telemetry_received": self.messages,
                "telemetry_devices": len(self.devices),
                "telemetry_payload_bytes": statistics.median(self.sizes) if self.sizes else None,
            }


async def sample_tree(pid: int, samples: list[Sample]) -> None:
    """Every 2 s, a ``Sample`` of ``pid``'s tree, until cancelled."""
    start = time.perf_counter()
    while True:
        sample = await asyncio.to_thread(tree_sample, pid, time.perf_counter() - start)
        if sample.processes:
            samples.append(sample)
        await asyncio.sleep(2.0)


async def run_child(
    label: str, command: Sequence[str], broker: PrivateBroker, timeout_s: float
) -> dict[str, Any]:
    """Run one contender to the end: its JSON, plus what was measured around it."""
    counter = await asyncio.to_thread(TelemetryCounter, broker.host, broker.port)
    broker_pid = broker._proc.pid if broker._proc is not None else None  # our private broker
    broker_cpu = pid_cpu(broker_pid) if broker_pid else float("nan")
    load_before = os.getloadavg()[0]
    cpu_before, started = children_cpu(), time.perf_counter()
    log(f"{label}: {' '.join(command)}")
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    samples: list[Sample] = []
    sampler = asyncio.create_task(sample_tree(proc.pid, samples))
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        if proc.returncode is None:  # interrupted or timed out: its whole tree goes
            for pid in reversed(process_tree(proc.pid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            await proc.wait()
    wall = time.perf_counter() - started
    whole_cpu = children_cpu() - cpu_before
    broker_cpu = (pid_cpu(broker_pid) if broker_pid else float("nan")) - broker_cpu
    counted = await asyncio.to_thread(counter.close)
    try:
        report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{label} printed no JSON (exit {proc.returncode})") from exc
    # The steady part of the samples: from 10 % to 90 % of the run (start-up and end left out).
    # The steady part of the samples: from 25 % to 90 % of the run (start-up and end left out).
    steady = [s for s in samples if 0.25 * wall <= s.t <= 0.9 * wall] or samples
    report["outside"] = {
        "exit": proc.returncode,
        "wall_s": wall,
        "whole_life_cpu_s": whole_cpu,
        "broker_cpu_s": broker_cpu,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "processes": max((s.processes for s in steady), default=0),
        "threads": max((s.threads for s in steady), default=0),
        "rss_bytes_median": statistics.median(s.rss for s in steady) if steady else 0,
        "rss_bytes_max": max((s.rss for s in samples), default=0),
        **mid_run_cpu(samples, proc.pid, wall),
        **counted,
    }
    log(f"{label}: {summary_line(report)}")
    return report


def summary_line(report: dict[str, Any]) -> str:
    f = figures(report)
    return (
        f"{report['connected']}/{report['cameras']} connected, CPU mid-run "
        f"{f['cpu_percent']:.1f} % of a core (reported: steady "
        f"{f['reported_steady_cpu_percent']:.1f} %, whole run {f['run_cpu_percent']:.1f} %), "
        "idle RSS/camera "
        f"{f['idle_rss_per_camera_bytes'] / 1024:.1f} KiB, {f['threads']:,} threads, telemetry "
        f"sent {f['telemetry_sent']:,} / received {f['telemetry_received']:,}, errors {f['errors']}"
    )


def fleet_prefix(args: argparse.Namespace) -> list[str]:
    return args.fleet_command.split() if args.fleet_command else [sys.executable, "-m", "sim.cli"]


def fleet_command(
    args: argparse.Namespace, broker: PrivateBroker, work: Path, *, recording: bool
) -> list[str]:
    fraction = args.recording_fraction if recording else 0.0
    receiver = ["--receiver", "embedded", "--store", str(work / "store")] if recording else []
    return [
        *fleet_prefix(args), "fleet", "--count", str(args.count),
        "--duration", f"{args.duration:g}", "--recording-fraction", f"{fraction:g}",
        "--telemetry-interval", f"{args.telemetry_interval:g}", "--broker", broker.url,
        *(receiver or ["--receiver", "none"]), "--data-dir", str(work / "cameras"), "--json",
    ]  # fmt: skip


def baseline_command(args: argparse.Namespace, broker: PrivateBroker, payload: int) -> list[str]:
    return [
        sys.executable, str(BASELINE), "--broker", broker.url, "--count", str(args.count),
        "--duration", f"{args.duration:g}", "--telemetry-interval", f"{args.telemetry_interval:g}",
        "--payload-bytes", str(payload), "--json",
    ]  # fmt: skip


async def check_fleet_command(args: argparse.Namespace) -> str:
    """``bwc-sim fleet --help``'s text; SystemExit when the command is not there."""
    proc = await asyncio.create_subprocess_exec(
        *fleet_prefix(args), "fleet", "--help", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bwc-sim fleet is not available: {out.decode().strip()[-300:]}")
    return out.decode()


def fresh_broker() -> PrivateBroker:
    """A private mosquitto for one run: no persistence, no connection limit.

    Each run gets its own: on a shared broker the receiver's persistent session (a fixed client
    ID) would collect the audit-log ranges the cameras of a run without a receiver publish, and
    the next recording run's receiver would be handed them first.
    """
    return PrivateBroker(kind="mosquitto", persistence=False, extra_config=["max_connections -1"])


async def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    await check_fleet_command(args)
    fd_limit = raise_fd_limit()
    timeout = args.duration + 600
    runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        run: dict[str, Any] = {}
        if args.recording_fraction > 0:
            async with fresh_broker() as broker:
                command = fleet_command(args, broker, work / f"rec-{i}", recording=True)
                run["ours_recording"] = await run_child("ours, recording", command, broker, timeout)
            shutil.rmtree(work / f"rec-{i}", ignore_errors=True)
        async with fresh_broker() as broker:
            command = fleet_command(args, broker, work / f"idle-{i}", recording=False)
            run["ours"] = await run_child("ours, telemetry only", command, broker, timeout)
        shutil.rmtree(work / f"idle-{i}", ignore_errors=True)
        payload = run["ours"]["outside"]["telemetry_payload_bytes"]
        async with fresh_broker() as broker:
            command = baseline_command(args, broker, int(payload) if payload else 0)
            run["baseline"] = await run_child("baseline", command, broker, timeout)
        runs.append(run)
    return {
        "cameras": args.count,
        "duration_s": args.duration,
        "telemetry_interval_s": args.telemetry_interval,
        "recording_fraction": args.recording_fraction,
        "repeat": args.repeat,
        "fd_limit": fd_limit,
        "runs": runs,
        "summary": summarise(runs),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
    }


def figures(report: dict[str, Any]) -> dict[str, float]:
    """The table's figures for one contender's run, the same definitions for both."""
    cameras = report["cameras"]
    out = report["outside"]
    if "startup_s" in report:  # the baseline
        steady = report["cpu_per_core_percent"]
        run = 100.0 * (report["startup_cpu_s"] + report["cpu_s"])
        run /= report["startup_s"] + report["duration_s"]
        growth = report["rss_growth_per_camera_bytes"]
    else:  # ours; no idle window (None) when the first recording came before the last connect
        steady = report.get("idle_cpu_per_core_percent") or math.nan
        run = report["cpu_per_core_percent"]
        growth = report["rss_per_camera_bytes"]
    idle_rss = report.get("idle_rss_per_camera_bytes")
    cpu = out["cameras_cpu_percent"]
    return {
        "cameras": cameras,
        "cpu_percent": cpu,
        "cpu_ms_per_s_per_camera": 10.0 * cpu / cameras,
        "cameras_per_core": cameras * 100.0 / cpu if cpu > 0 else math.nan,
        "reported_steady_cpu_percent": steady,
        "run_cpu_percent": run,
        "root_cpu_percent": out["root_cpu_percent"],
        "idle_rss_per_camera_bytes": math.nan if idle_rss is None else idle_rss,
        "rss_growth_per_camera_bytes": growth,
        "rss_per_camera_bytes": out["rss_bytes_median"] / cameras,
        "processes": out["processes"],
        "threads": out["threads"],
        "telemetry_sent": report["telemetry_sent"],
        "telemetry_received": out["telemetry_received"],
        "whole_life_cpu_s": out["whole_life_cpu_s"],
        "broker_cpu_percent": 100.0 * out["broker_cpu_s"] / out["wall_s"],
        "errors": report["errors"],
    }


RATIOS = (
    "cpu_percent",
    "cpu_ms_per_s_per_camera",
    "cameras_per_core",
    "reported_steady_cpu_percent",
    "run_cpu_percent",
    "idle_rss_per_camera_bytes",
    "rss_growth_per_camera_bytes",
    "rss_per_camera_bytes",
    "threads",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per contender, each figure's list over the repeats; the ratios ours / baseline."""
    out: dict[str, Any] = {}
    for name in ("ours_recording", "ours", "baseline"):
        per_run = [figures(run[name]) for run in runs if name in run]
        if per_run:
            out[name] = {key: [f[key] for f in per_run] for key in per_run[0]}
    ratios: dict[str, list[float]] = {}
    recording: dict[str, list[float]] = {}
    for run in runs:
        base = figures(run["baseline"])
        for key, value in figures(run["ours"]).items():
            if key in RATIOS and base[key]:
                ratios.setdefault(key, []).append(value / base[key])
        if "ours_recording" in run:
            for key, value in figures(run["ours_recording"]).items():
                if key in RATIOS and base[key]:
                    recording.setdefault(key, []).append(value / base[key])
    out["ratios"] = ratios
    out["recording_ratios"] = recording
    return out


def spread(values: Sequence[float], fmt: str) -> str:
    mid = statistics.median(values)
    if len(values) == 1:
        return format(mid, fmt)
    return f"{format(mid, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


ROWS = (
    ("cameras", "cameras", ",.0f", 1.0),
    ("CPU mid-run, % of one core", "cpu_percent", ".1f", 1.0),
    ("CPU per camera, ms/s", "cpu_ms_per_s_per_camera", ".3f", 1.0),
    ("cameras per core", "cameras_per_core", ",.0f", 1.0),
    ("CPU reported, steady, %", "reported_steady_cpu_percent", ".1f", 1.0),
    ("CPU reported, whole run, %", "run_cpu_percent", ".1f", 1.0),
    ("parent process CPU, %", "root_cpu_percent", ".1f", 1.0),
    ("idle RSS per camera, KiB", "idle_rss_per_camera_bytes", ".1f", 1 / 1024),
    ("RSS growth per camera, KiB", "rss_growth_per_camera_bytes", ".1f", 1 / 1024),
    ("RSS per camera (tree), KiB", "rss_per_camera_bytes", ".1f", 1 / 1024),
    ("processes", "processes", ".0f", 1.0),
    ("threads", "threads", ",.0f", 1.0),
    ("telemetry sent", "telemetry_sent", ",.0f", 1.0),
    ("telemetry received", "telemetry_received", ",.0f", 1.0),
    ("tree CPU, whole life, s", "whole_life_cpu_s", ".1f", 1.0),
    ("broker CPU, % of one core", "broker_cpu_percent", ".1f", 1.0),
    ("errors", "errors", ".0f", 1.0),
)


def print_table(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(
        f"Fleet, each run on a fresh private mosquitto: {report['cameras']:,} cameras, "
        f"{report['duration_s']:g} s per run, telemetry every "
        f"{report['telemetry_interval_s']:g} s; median of {report['repeat']} (range)"
    )
    names = {
        "ours_recording": f"ours, {report['recording_fraction']:.0%} recording",
        "ours": "ours, telemetry",
        "baseline": "paho thread/dev",
    }
    present = [name for name in names if name in summary]
    ratios = summary["ratios"]
    width = 24
    header = f"{'':<30}" + "".join(f"{names[n]:>{width}}" for n in present) + f"{'ours/paho':>18}"
    print(header)
    print("-" * len(header))
    for title, key, fmt, scale in ROWS:
        cells = [spread([v * scale for v in summary[n][key]], fmt) for n in present]
        ratio = spread(ratios[key], ".4f" if key == "threads" else ".2f") if key in ratios else ""
        print(f"{title:<30}" + "".join(f"{c:>{width}}" for c in cells) + f"{ratio:>18}")
    print("ours/paho: ours with telemetry only over the baseline (which only sends telemetry).")
    recording = summary.get("recording_ratios", {})
    if recording:
        print(
            "the recording run over the baseline: CPU mid-run "
            f"{spread(recording['cpu_percent'], '.2f')}, whole run "
            f"{spread(recording['run_cpu_percent'], '.2f')}, RSS growth per camera "
            f"{spread(recording['rss_growth_per_camera_bytes'], '.2f')}"
        )
    for i, run in enumerate(report["runs"], 1):
        if "ours_recording" in run:
            r = run["ours_recording"]
            print(
                f"run {i}, recording: {r['recordings']} recordings, {r['segments_verified']} "
                f"segments verified, {r['bytes_verified'] / 1e6:,.1f} MB, "
                f"{r['segments_pending']} pending; receiver {r.get('receiver')}; error kinds "
                f"{r['error_kinds']}, warnings {r.get('warning_kinds')}"
            )
        for name in present:
            if name in run:
                out = run[name]["outside"]
                print(
                    f"run {i}, {names[name]}: {out['wall_s']:.0f} s; telemetry "
                    f"{out['telemetry_payload_bytes']} B median from "
                    f"{out['telemetry_devices']:,} devices; load average "
                    f"{out['load_average_before_after'][0]:.2f} -> "
                    f"{out['load_average_before_after'][1]:.2f}"
                )
    print(f"machine: {report['machine']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, help="cameras (default 1000)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 120)")
    parser.add_argument(
        "--recording-fraction", type=float, default=0.05,
        help="cameras recording and uploading in the must-show run (default 0.05; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--telemetry-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"a smoke run: {QUICK_COUNT} cameras, {QUICK_DURATION:g} s",
    )  # fmt: skip
    parser.add_argument("--dir", type=Path, help="where the data and stores go (/dev/shm)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fleet-command", help=argparse.SUPPRESS)  # tests: replaces bwc-sim
    args = parser.parse_args(argv)
    if args.count is None:
        args.count = QUICK_COUNT if args.quick else 1000
    if args.duration is None:
        args.duration = QUICK_DURATION if args.quick else 120.0
    if args.count < 1 or args.duration <= 0 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1, --duration positive")
    if not 0.0 <= args.recording_fraction <= 1.0:
        parser.error("--recording-fraction must be within 0..1")
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        raise SystemExit("mosquitto is not installed")
    default_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir=args.dir or default_dir))
    load = [os.getloadavg()[0]]
    try:
        report = asyncio.run(bench(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    report["load_average_before_after"] = load
    report["measured"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
        print(f"load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}")
    errors = sum(run[name]["errors"] for run in report["runs"] for name in run)
    return 1 if errors else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
