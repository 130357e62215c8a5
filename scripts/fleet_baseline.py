"""The thread-per-device baseline for the fleet benchmark: N paho-mqtt clients, one thread each.

Usage: .venv/bin/python scripts/fleet_baseline.py --broker mqtt://127.0.0.1:PORT [--count 1000]
       [--duration 120] [--telemetry-interval 10] [--payload-bytes N] [--per-process 250] [--json]

What Python device simulators do today: one ``threading.Thread`` per device, each with its own
``paho.mqtt.client.Client`` (paho-mqtt 2.x, MQTT 5, keepalive 30 s as the camera's link) whose
``loop_start()`` starts a network thread of its own, so two OS threads per device. Each device
thread connects, then loops: build its telemetry as a dict, ``json.dumps`` it, ``publish`` it at
QoS 0 on ``bwc/v1/dev/{id}/telemetry`` (the camera's topic and QoS), sleep the interval (an
``Event.wait``, so the run can end on time). The first publish of each device comes after a random
part of the interval, so the fleet's telemetry is spread over the interval rather than in bursts.
The payload is the protocol's ``Telemetry`` JSON (``protocol.messages``), padded with counters to
``--payload-bytes`` when given (the benchmark passes the size the cameras sent). The baseline only
sends telemetry: it buffers no video and records nothing.

paho's network loop uses ``select()``, which fails on a descriptor above 1023, and each client
holds three (its socket and a wake-up socket pair): one process connects about 340 clients and the
rest fail and retry forever. So the devices run in processes of at most ``--per-process`` (250),
started together, each connecting its devices, then all starting the steady window at once (a
line on stdin); ``--per-process 0`` puts them all in one process, to see that limit.

Measured in each process (Linux /proc and ``getrusage``), then summed:

* start-up: from creating the first thread to every device connected (or failed), its wall time
  and CPU time;
* idle RSS per device: RSS once every device is connected, less the RSS just before the first
  thread was made, over N (each device has made at most its first publish by then); also the
  processes' whole RSS over N (the interpreters included);
* the steady window: ``--duration`` seconds from then; process CPU (user + system) over it, as a
  percentage of one core and in ms per second per device, and the RSS at its end;
* errors: failed connects (an exception or a refusal in ``on_connect``, or no answer in 60 s),
  publishes that did not return ``MQTT_ERR_SUCCESS``, and disconnects nobody asked for;
  ``error_kinds`` counts them.

RLIMIT_NOFILE is raised to the hard limit first. With ``--json`` one JSON object goes to stdout;
progress goes to stderr. Exit 1 when there were errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.messages import Battery, Clock, Storage, Telemetry, UploadQueue, encode_message

KEEPALIVE_S = 30  # device.mqtt.settings.DEFAULT_KEEPALIVE_S
CONNECT_TIMEOUT_S = 60.0
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"
DEFAULT_PER_PROCESS = 250
"""paho's network loop calls ``select()``, which takes no descriptor above 1023 (FD_SETSIZE); each
client holds three (its socket and a socket pair to wake its loop), so one process runs about
340 clients at most. Simulators that need more run several processes: so does this baseline."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def proc_status(field: str) -> int:
    """A number from /proc/self/status (``VmRSS`` in bytes, ``Threads`` as is)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            value = int(line.split()[1])
            return value * 1024 if line.rstrip().endswith("kB") else value
    raise KeyError(field)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def telemetry_template(device: str, payload_bytes: int | None) -> dict[str, Any]:
    """The protocol's telemetry JSON of a buffering camera, as a dict a simulator would fill in."""
    message = Telemetry(
        ts=dt.datetime(2026, 11, 29, 14, tzinfo=dt.UTC),
        device=device,
        state="buffering",
        battery=Battery(percent=100.0, charging=False, minutes_left=720.0),
        storage=Storage(used_bytes=0, capacity_bytes=64_000_000_000, segments=0, full=False),
        upload=UploadQueue(pending_segments=0, pending_bytes=0),
        clock=Clock(set=True, source="sync"),
    )
    template: dict[str, Any] = json.loads(encode_message(message))
    template["ts"] = time.strftime(TS_FORMAT, time.gmtime())  # as each publish sets it
    if payload_bytes is not None:
        # One counter whose name makes up the difference: "pad_...":0 adds its name plus 4 bytes.
        short = payload_bytes - len(json.dumps(template, separators=(",", ":")))
        if short >= 5:
            template["counters"] = {"pad_".ljust(short - 4, "x"): 0}
    return template


class Fleet:
    """N devices, one thread and one paho client (with its network thread) each."""

    def __init__(self, host: str, port: int, args: argparse.Namespace) -> None:
        self.host, self.port = host, port
        self.count: int = args.count
        self.interval: float = args.telemetry_interval
        self.payload_bytes: int | None = args.payload_bytes
        self.first_index: int = args.first_index
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self.connected = 0
        self.settled = 0  # connected or failed
        self.all_settled = threading.Event()
        self.sent = 0
        self.sent_bytes = 0
        self.threads: list[threading.Thread] = []

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def _settle(self, *, ok: bool) -> None:
        with self.lock:
            self.connected += ok
            self.settled += 1
            if self.settled == self.count:
                self.all_settled.set()

    def start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self.device, args=(i,), name=f"dev-{i}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def device(self, index: int) -> None:
        """One simulated device: connect, then publish telemetry every interval until stopped."""
        device = f"base-{self.first_index + index:05d}"
        topic = f"bwc/v1/dev/{device}/telemetry"
        connected = threading.Event()
        outcome: list[bool] = []

        def on_connect(
            _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
        ) -> None:
            ok = not reason.is_failure
            if not ok:
                self.error("connect_refused")
            if not connected.is_set():
                outcome.append(ok)
                connected.set()

        def on_disconnect(
            _client: mqtt.Client, _userdata: Any, _flags: Any, _reason: Any, _properties: Any
        ) -> None:
            if not self.stop.is_set():
                self.error("disconnected")

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        try:
            client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        except OSError:
            self.error("connect_failed")
            self._settle(ok=False)
            return
        client.loop_start()
        if not connected.wait(CONNECT_TIMEOUT_S):
            self.error("connect_timeout")
        ok = bool(outcome) and outcome[0]
        self._settle(ok=ok)
        if not ok:
            client.loop_stop()
            return
        telemetry = telemetry_template(device, self.payload_bytes)
        battery = telemetry["battery"]
        rng = random.Random(self.first_index + index)
        self.stop.wait(rng.uniform(0.0, self.interval))
        while not self.stop.is_set():
            telemetry["ts"] = time.strftime(TS_FORMAT, time.gmtime())
            battery["percent"] = max(0.0, round(battery["percent"] - 0.01, 3))
            payload = json.dumps(telemetry, separators=(",", ":"))
            info = client.publish(topic, payload, qos=0)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.error(f"publish_{info.rc.name.lower()}")
            else:
                with self.lock:
                    self.sent += 1
                    self.sent_bytes += len(payload)
            self.stop.wait(self.interval)
        client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def run_process(args: argparse.Namespace) -> dict[str, Any]:
    """This process's devices: start them, wait for every connect, then the steady window.

    With ``--wait-for-go`` (a worker of ``run_workers``) it prints a ``ready`` JSON line once
    every device is connected and starts the window when a line arrives on stdin.
    """
    url = urlsplit(args.broker)
    if url.scheme != "mqtt" or url.hostname is None:
        raise SystemExit(f"--broker must be mqtt://host:port, got {args.broker}")
    fd_limit = raise_fd_limit()
    fleet = Fleet(url.hostname, url.port or 1883, args)
    rss_before, threads_before = proc_status("VmRSS"), proc_status("Threads")
    cpu_before, started = cpu_seconds(), time.perf_counter()
    fleet.start()
    fleet.all_settled.wait(CONNECT_TIMEOUT_S + 10)
    startup_s, startup_cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    if fleet.settled < args.count:  # neither connected nor failed in time
        fleet.errors["connect_stuck"] += args.count - fleet.settled
    rss_connected, threads_connected = proc_status("VmRSS"), proc_status("Threads")
    if args.wait_for_go:
        print(json.dumps({"ready": fleet.connected}), flush=True)
        sys.stdin.readline()
    else:
        log(
            f"baseline: {fleet.connected} of {args.count} connected in {startup_s:.1f} s, "
            f"{threads_connected} threads, RSS {rss_connected / 2**20:.1f} MiB; "
            f"running {args.duration:g} s ..."
        )
    window_cpu, window_start = cpu_seconds(), time.perf_counter()
    sent_at_start = fleet.sent
    deadline = window_start + args.duration
    while (left := deadline - time.perf_counter()) > 0:
        time.sleep(min(left, 10.0))
        if not args.wait_for_go:
            log(f"baseline: {fleet.sent - sent_at_start:,} sent, {fleet.errors.total()} errors")
    wall = time.perf_counter() - window_start
    cpu = cpu_seconds() - window_cpu
    rss_end, threads_end = proc_status("VmRSS"), proc_status("Threads")
    sent_in_window = fleet.sent - sent_at_start
    fleet.close()
    return {
        "cameras": args.count,
        "processes": 1,
        "duration_s": wall,
        "connected": fleet.connected,
        "telemetry_sent": fleet.sent,
        "telemetry_sent_in_window": sent_in_window,
        "telemetry_bytes": fleet.sent_bytes,
        "errors": fleet.errors.total(),
        "error_kinds": dict(fleet.errors),
        "startup_s": startup_s,
        "startup_cpu_s": startup_cpu,
        "cpu_s": cpu,
        "rss_before_bytes": rss_before,
        "rss_connected_bytes": rss_connected,
        "rss_bytes": rss_end,
        "threads": threads_end,
        "threads_before": threads_before,
        "threads_connected": threads_connected,
        "fd_limit": fd_limit,
    }


def run_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The devices split over ``ceil(count / per_process)`` processes, windows started together."""
    workers = -(-args.count // args.per_process)
    counts = [args.count // workers + (i < args.count % workers) for i in range(workers)]
    first = [sum(counts[:i]) + args.first_index for i in range(workers)]
    log(f"baseline: {args.count} devices in {workers} processes of {max(counts)} at most ...")
    procs = []
    for n, i0 in zip(counts, first, strict=True):
        command = [sys.executable, __file__, "--broker", args.broker, "--count", str(n)]
        command += ["--first-index", str(i0), "--duration", str(args.duration)]
        command += ["--telemetry-interval", str(args.telemetry_interval), "--wait-for-go"]
        if args.payload_bytes:
            command += ["--payload-bytes", str(args.payload_bytes)]
        procs.append(
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    try:
        ready = []
        for proc in procs:
            assert proc.stdout is not None
            ready.append(json.loads(proc.stdout.readline() or "{}").get("ready", 0))
        log(f"baseline: {sum(ready)} of {args.count} connected; running {args.duration:g} s ...")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=args.duration + 120)
            if proc.returncode not in (0, 1):
                raise SystemExit(f"a baseline worker failed ({proc.returncode})")
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def aggregate(args: argparse.Namespace, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for the whole fleet from its processes' reports."""

    def total(key: str) -> Any:
        return sum(part[key] for part in parts)

    count, wall = args.count, statistics.mean(part["duration_s"] for part in parts)
    kinds: Counter[str] = Counter()
    for part in parts:
        kinds.update(part["error_kinds"])
    sent = total("telemetry_sent")
    return {
        "contender": "paho-mqtt thread-per-device",
        "cameras": count,
        "processes": len(parts),
        "per_process": max(part["cameras"] for part in parts),
        "duration_s": wall,
        "telemetry_interval_s": args.telemetry_interval,
        "payload_bytes": total("telemetry_bytes") // max(1, sent),
        "connected": total("connected"),
        "telemetry_sent": sent,
        "telemetry_sent_in_window": total("telemetry_sent_in_window"),
        "recordings": 0,
        "errors": total("errors"),
        "error_kinds": dict(kinds),
        "startup_s": max(part["startup_s"] for part in parts),
        "startup_cpu_s": total("startup_cpu_s"),
        "cpu_s": total("cpu_s"),
        "cpu_per_core_percent": 100.0 * total("cpu_s") / wall,
        "cpu_ms_per_s_per_camera": 1e3 * total("cpu_s") / wall / count,
        "rss_before_bytes": total("rss_before_bytes"),
        "rss_bytes": total("rss_bytes"),
        # Each process's growth from just before its first thread: the devices' own memory.
        "idle_rss_per_camera_bytes": (total("rss_connected_bytes") - total("rss_before_bytes"))
        / count,
        "rss_growth_per_camera_bytes": (total("rss_bytes") - total("rss_before_bytes")) / count,
        # The processes' whole RSS (interpreter and imports included) over the devices.
        "rss_per_camera_bytes": total("rss_bytes") / count,
        "threads": total("threads"),
        "threads_per_camera": (total("threads") - total("threads_before")) / count,
        "fd_limit": min(part["fd_limit"] for part in parts),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port")
    parser.add_argument("--count", type=int, default=1000, help="devices (default 1000)")
    parser.add_argument("--duration", type=float, default=120.0, help="steady window (s)")
    parser.add_argument(
        "--telemetry-interval", type=float, default=10.0, help="seconds between publishes"
    )
    parser.add_argument("--payload-bytes", type=int, help="pad the telemetry JSON to this size")
    parser.add_argument(
        "--per-process",
        type=int,
        default=DEFAULT_PER_PROCESS,
        help=f"devices per process (default {DEFAULT_PER_PROCESS}; 0: all in this process, "
        "which paho's select() limits to about 340)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--wait-for-go", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count < 1 or args.duration <= 0 or args.telemetry_interval <= 0:
        parser.error("--count must be at least 1; --duration and --telemetry-interval positive")
    return args


def main() -> int:
    args = parse_args()
    if args.wait_for_go or args.per_process <= 0 or args.count <= args.per_process:
        parts = [run_process(args)]
    else:
        parts = run_workers(args)
    if args.wait_for_go:
        print(json.dumps(parts[0]), flush=True)
        return 0
    report = aggregate(args, parts)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for key, value in sorted(report.items()):
            print(f"{key:<28} {value}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
