"""Benchmark the verified upload of a real recording through mosquitto, against the C clients.

Usage: .venv/bin/python scripts/bench_upload.py [--size-mb 200] [--chunk-sizes 65536,262144,1048576]
       [--repeat 3] [--receiver process|embedded] [--window N] [--dir DIR] [--json]

Makes one recording of at least --size-mb MB with the repo's own camera (a scenario at the
``1080p30`` profile, played in virtual time), then, for each chunk size and each repeat, back to
back against one private mosquitto on loopback (``PrivateBroker``, persistence off: with it on,
mosquitto rewrites every queued message to disk each second, which measures the disk):

* ours: a fresh copy of that data directory uploaded by the device's daemon
  (``device.daemon.Daemon`` driving ``device.uploads.UploadManager`` over ``device.mqtt.MqttLink``,
  the default ``UploadConfig`` at that chunk size) to the evidence receiver (``ReceiverService``
  + ``EvidenceReceiver``: CRC and SHA-256 checked, fsync before every ack), in its own process by
  default or embedded in the device's event loop as ``bwc-sim run`` does. Timed from
  ``Daemon.run`` (connect included) to the receiver's receipt of the last segment; MB/s is the
  verified bytes over that time.
* baseline: ``mosquitto_pub -V mqttv5 -q 1 -f CHUNK --repeat N --repeat-delay 0`` to
  ``mosquitto_sub -V mqttv5 -q 1 -C N -N > /dev/null``: N messages of the chunk size, the same
  bytes rounded up to whole chunks. The subscriber's persistent session is subscribed first (a
  ``mosquitto_sub -E``), so no message can be missed; timed from launching the publisher to the
  subscriber's exit after the N-th message.

The ratio is ours / baseline of the same repeat; the table shows the median of the repeats and
their range, then the CPU seconds per GB moved by each process (the device, the receiver, the
broker; for the baseline both C clients together, and the broker). DIR (the recording and the
receiver's store) defaults to /dev/shm, where an fsync is nearly free; --dir /tmp puts the
receiver's fsync per ack on this VM's disk. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import logging
import math
import multiprocessing
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.daemon import Daemon, DaemonConfig
from device.journal import EventJournal
from device.mqtt.link import MqttLink, Presence
from device.mqtt.settings import parse_broker_url
from device.uploads import UploadConfig, UploadManager
from protocol.topics import DeviceChannel, Topics
from protocol.upload import CHUNK_HEADER_SIZE
from sim.broker import PrivateBroker
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import Receipt, ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy
from sim.runner import ScenarioRun
from sim.scenario import parse_scenario
from sim.tuning import tune_allocator

DEVICE = "cam-bench"
VIDEO_BPS = 17_500_000 + 64_000  # the 1080p30 preset plus the default audio
TOPIC = "bench/upload"
SCENARIO = """
[scenario]
name = "Upload benchmark: one long 1080p30 recording"
duration = {duration}
[device]
id = "{device}"
seed = 7
epoch_utc = 2026-11-29T14:00:00Z
[policy]
segment_s = 3600
[media]
video = "1080p30"
[[timeline]]
at = 0
do = "power_on"
[[timeline]]
at = 40
do = "double_press"
[[timeline]]
at = {stop}
do = "hold"
reason = "benchmark"
[[timeline]]
at = {off}
do = "power_off"
"""
STILL = """
[scenario]
name = "Upload benchmark: the camera switched off, uploading"
duration = 1
[device]
id = "{device}"
seed = 7
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the recording --------------------------------------------------------------------------


def make_recording(data_dir: Path, size_mb: float) -> tuple[int, int]:
    """Record at least ``size_mb`` MB in virtual time; (segment bytes, segments)."""
    # The recording starts with the 30 s of pre-event video the camera buffered.
    recorded_s = max(5, int(size_mb * 1e6 * 8 / VIDEO_BPS) - 30 + 5)
    stop = 40 + recorded_s
    text = SCENARIO.format(device=DEVICE, duration=stop + 20, stop=stop, off=stop + 10)
    ScenarioRun(parse_scenario(text, "<bench>"), data_dir).run()
    segments = sorted(data_dir.glob("recordings/*/*.bwcseg"))
    total = sum(path.stat().st_size for path in segments)
    if total < size_mb * 1e6:
        raise SystemExit(f"the recording has {total} bytes, fewer than {size_mb} MB")
    return total, len(segments)


class _Still:
    """A driver for a camera that is switched off: nothing moves, only the uploads run."""

    def advance_to(self, until: float) -> None:
        pass

    def next_time(self) -> float | None:
        return None


# -- ours: the daemon, the link, the embedded receiver --------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    seconds: float
    nbytes: int
    cpu: dict[str, float]
    """CPU seconds by process (sender, receiver, broker) over the run."""

    @property
    def mb_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds


def upload_config(chunk_size: int, window: int | None = None) -> UploadConfig:
    """The default config at ``chunk_size``; the message limit raised only where it must be."""
    default = UploadConfig()
    limit = max(default.max_message_size, chunk_size + CHUNK_HEADER_SIZE)
    return UploadConfig(
        chunk_size=chunk_size, max_message_size=limit, window=window or default.window
    )


def _receiver(
    store_dir: Path, url: str, client_id: str, key: bytes, out: Connection, *, profile: Path | None
) -> None:
    """The evidence receiver in its own process: sends "ready", then (time, size) per receipt."""

    def verified(receipt: Receipt) -> None:
        # perf_counter is CLOCK_MONOTONIC, the same clock in every process.
        out.send((time.perf_counter(), receipt.size, time.process_time()))

    async def serve() -> None:
        store = ReceiverStore(store_dir)
        core = EvidenceReceiver(
            store, TrustPolicy(store.trust, TrustMode.PINNED), on_verified=verified
        )
        core.present_key(DEVICE, key)
        service = ReceiverService(core, parse_broker_url(url, protocol="5"), client_id=client_id)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(service.run())
            await service.connected.wait()
            out.send(("ready", time.process_time()))

    tune_allocator()  # as `bwc-sim receiver` does
    # The parent ends this process with SIGTERM; as an exception it lets the profile be saved.
    signal.signal(signal.SIGTERM, _interrupt)
    with profiled(profile), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile what runs inside, saved to ``path`` (pstats format); nothing when None."""
    if path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


@contextlib.asynccontextmanager
async def receiver(
    mode: str, store_dir: Path, url: str, client_id: str, key: bytes, *, profile: Path | None = None
) -> AsyncIterator[Callable[[], list[tuple[float, int, float]]]]:
    """A receiver (``embedded`` in this event loop, or in its own ``process``), subscribed.

    Yields a function returning the (perf_counter, bytes, receiver CPU seconds since ready) of
    each receipt so far (the CPU is NaN when embedded: it shares the device's process).
    """
    if mode == "process":
        here, there = multiprocessing.get_context("spawn").Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=_receiver,
            args=(store_dir, url, client_id, key, there),
            kwargs={"profile": profile},
            daemon=True,
        )
        child.start()
        receipts: list[tuple[float, int, float]] = []
        await asyncio.to_thread(here.poll, 60)
        ready, cpu0 = here.recv()
        if ready != "ready":
            raise SystemExit("the receiver process did not start")

        def drain() -> list[tuple[float, int, float]]:
            while here.poll():
                at, size, cpu = here.recv()
                receipts.append((at, size, cpu - cpu0))
            return receipts

        try:
            yield drain
        finally:
            drain()
            child.terminate()
            await asyncio.to_thread(child.join, 10)
        return
    found: list[tuple[float, int, float]] = []
    store = ReceiverStore(store_dir)
    core = EvidenceReceiver(
        store,
        TrustPolicy(store.trust, TrustMode.PINNED),
        on_verified=lambda receipt: found.append((time.perf_counter(), receipt.size, math.nan)),
    )
    core.present_key(DEVICE, key)
    service = ReceiverService(core, parse_broker_url(url, protocol="5"), client_id=client_id)
    async with asyncio.TaskGroup() as tasks:
        serving = tasks.create_task(service.run())
        await service.connected.wait()
        try:
            yield lambda: found
        finally:
            serving.cancel()
    core.close()


async def upload_once(
    broker: PrivateBroker,
    template: Path,
    work: Path,
    *,
    chunk_size: int,
    mode: str,
    window: int | None = None,
    profile: Path | None = None,
) -> Result:
    """Copy the recording to a fresh device, upload it to a fresh receiver, time it."""
    data_dir, store_dir = work / "device", work / "receiver"
    shutil.copytree(template, data_dir)
    run = ScenarioRun(
        parse_scenario(STILL.format(device=DEVICE), "<still>"),
        data_dir,
        fresh=False,
    )
    camera = run.camera
    settings = parse_broker_url(broker.url, protocol="5")
    topics = Topics()
    config = DaemonConfig(topics=topics)
    uploads = UploadManager(
        camera.store,
        data_dir / "uploads",
        device_id=DEVICE,
        topics=topics,
        config=upload_config(chunk_size, window),
        audit=camera._trail,
        rng=random.Random(1),
    )
    expected = uploads_pending(uploads)
    link = MqttLink(
        settings,
        client_id=f"{DEVICE}-{work.name}",
        presence=Presence(topics.device(DEVICE, DeviceChannel.STATUS), b"{}", b"{}"),
        rng=random.Random(2),
        subscriptions=Daemon.subscriptions(DEVICE, config),
    )
    (data_dir / "journal").mkdir(exist_ok=True)
    daemon = Daemon(
        camera,
        driver=_Still(),
        link=link,
        journal=EventJournal(data_dir / "journal" / "events.journal"),
        uploads=uploads,
        config=config,
    )
    key = run.identity.key.public_bytes()
    receiver_profile = None if profile is None else profile / f"receiver-{work.name}.pstats"
    async with receiver(
        mode, store_dir, broker.url, f"receiver-{work.name}", key, profile=receiver_profile
    ) as receipts:
        broker_cpu, device_cpu = process_cpu(broker), time.process_time()
        started = time.perf_counter()
        # Until the device has the verified acks too (it deletes its copies then).
        with profiled(None if profile is None else profile / f"sender-{work.name}.pstats"):
            await daemon.run(
                asyncio.Event(), finished=lambda: uploads.progress().queued_segments == 0
            )
        found = receipts()
        device_cpu = time.process_time() - device_cpu
        broker_cpu = process_cpu(broker) - broker_cpu
    progress = uploads.progress()
    if len(found) != expected or progress.queued_segments or progress.rejected_segments:
        raise SystemExit(f"upload incomplete: {progress}, {len(found)} receipts")
    shutil.rmtree(work)
    cpu = {"sender": device_cpu, "receiver": found[-1][2], "broker": broker_cpu}
    return Result(found[-1][0] - started, sum(size for _, size, _ in found), cpu)


def process_cpu(broker: PrivateBroker) -> float:
    """CPU seconds the broker's process has used (Linux /proc)."""
    proc = broker._proc  # the script's own private broker
    if proc is None:
        return math.nan
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uploads_pending(uploads: UploadManager) -> int:
    uploads.refresh(0.0)
    return uploads.progress().queued_segments


# -- the baseline: mosquitto_pub to mosquitto_sub -------------------------------------------


def c_clients_once(broker: PrivateBroker, chunk_file: Path, count: int, tag: str) -> Result:
    """``count`` QoS 1 messages of ``chunk_file`` from mosquitto_pub to mosquitto_sub."""
    port, topic, sub_id = str(broker.port), f"{TOPIC}/{tag}", f"bench-sub-{tag}"
    common = ["-h", broker.host, "-p", port, "-V", "mqttv5", "-q", "1", "-t", topic]
    session = ["-i", sub_id, "-c", "-x", "600"]
    # Subscribe the persistent session first: nothing the publisher sends can be missed.
    subprocess.run(["mosquitto_sub", *common, *session, "-E"], check=True, timeout=30)
    before, broker_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), process_cpu(broker)
    sub = subprocess.Popen(
        ["mosquitto_sub", *common, *session, "-C", str(count), "-N"],
        stdout=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        subprocess.run(
            ["mosquitto_pub", *common, "-f", str(chunk_file), "--repeat", str(count),
             "--repeat-delay", "0"],
            check=True,
            timeout=600,
        )  # fmt: skip
        sub.wait(timeout=600)
        elapsed = time.perf_counter() - started
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    if sub.returncode != 0:
        raise SystemExit(f"mosquitto_sub failed ({sub.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = {"clients": clients, "broker": process_cpu(broker) - broker_cpu}
    return Result(elapsed, count * chunk_file.stat().st_size, cpu)


# -- the runs -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, parent: Path) -> dict[str, Any]:
    template = parent / "template"
    log(f"recording {args.size_mb} MB of 1080p30 in virtual time ...")
    total, segments = make_recording(template, args.size_mb)
    log(f"  {total:,} bytes in {segments} segment(s)")
    rows: list[dict[str, Any]] = []
    async with PrivateBroker(kind="mosquitto", persistence=False) as broker:
        for chunk_size in args.chunk_sizes:
            chunk_file = parent / f"chunk-{chunk_size}"
            chunk_file.write_bytes(random.Random(chunk_size).randbytes(chunk_size))
            count = -(-total // chunk_size)  # same bytes, rounded up to whole chunks
            runs = []
            for i in range(args.repeat):
                tag = f"{chunk_size}-{i}"
                ours = await upload_once(
                    broker,
                    template,
                    parent / f"run-{tag}",
                    chunk_size=chunk_size,
                    mode=args.receiver,
                    window=args.window,
                    profile=args.profile,
                )
                base = c_clients_once(broker, chunk_file, count, tag)
                runs.append({"ours": ours, "base": base})
                log(
                    f"  chunk {chunk_size:>8,} run {i + 1}: ours {ours.mb_s:6.1f} MB/s "
                    f"({ours.seconds:.2f} s), C clients {base.mb_s:6.1f} MB/s "
                    f"({base.seconds:.2f} s), ratio {ours.mb_s / base.mb_s:.2f}"
                )
            rows.append(summarise(chunk_size, runs))
    return {"recording_bytes": total, "segments": segments, "repeat": args.repeat, "rows": rows}


def summarise(chunk_size: int, runs: list[dict[str, Result]]) -> dict[str, Any]:
    ours = [r["ours"].mb_s for r in runs]
    base = [r["base"].mb_s for r in runs]
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return {
        "chunk_size": chunk_size,
        "ours_mb_s": ours,
        "c_clients_mb_s": base,
        "ratio": ratios,
        "ours_seconds": [r["ours"].seconds for r in runs],
        "verified_bytes": runs[0]["ours"].nbytes,
        # CPU seconds per GB moved, median over the runs, by process.
        "ours_cpu_s_per_gb": _cpu_per_gb([r["ours"] for r in runs]),
        "c_clients_cpu_s_per_gb": _cpu_per_gb([r["base"] for r in runs]),
    }


def _cpu_per_gb(results: list[Result]) -> dict[str, float]:
    return {
        name: statistics.median(r.cpu[name] / (r.nbytes / 1e9) for r in results)
        for name in results[0].cpu
    }


def print_table(report: dict[str, Any]) -> None:
    def spread(values: list[float], fmt: str) -> str:
        mid = statistics.median(values)
        if len(values) == 1:
            return format(mid, fmt)
        return f"{format(mid, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"

    print(
        f"Verified upload of {report['recording_bytes'] / 1e6:,.1f} MB "
        f"({report['segments']} segment(s)), median of {report['repeat']} (range):"
    )
    print(f"{'chunk':>10} | {'ours MB/s':>22} | {'C clients MB/s':>22} | {'ours / C':>18}")
    for row in report["rows"]:
        print(
            f"{row['chunk_size']:>10,} | {spread(row['ours_mb_s'], '.0f'):>22} | "
            f"{spread(row['c_clients_mb_s'], '.0f'):>22} | {spread(row['ratio'], '.2f'):>18}"
        )
    print("CPU seconds per GB moved (median):")
    for row in report["rows"]:
        ours = ", ".join(f"{k} {v:.2f}" for k, v in row["ours_cpu_s_per_gb"].items())
        base = ", ".join(f"{k} {v:.2f}" for k, v in row["c_clients_cpu_s_per_gb"].items())
        print(f"{row['chunk_size']:>10,} | ours: {ours} | C: {base}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=float, default=200.0, help="recording size (MB)")
    parser.add_argument(
        "--chunk-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=sorted({64 * 1024, 256 * 1024, UploadConfig().chunk_size}),
        help="comma-separated chunk sizes in bytes (default: 64 KiB, 256 KiB and the default, "
        "1 MiB)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per chunk size")
    parser.add_argument(
        "--receiver",
        choices=["process", "embedded"],
        default="process",
        help="the receiver in its own process (default) or in the device's event loop",
    )
    parser.add_argument("--window", type=int, help="upload window (default: UploadConfig's)")
    parser.add_argument("--dir", type=Path, help="where both stores go (default /dev/shm)")
    parser.add_argument(
        "--profile", type=Path, help="save cProfile stats of the sender and receiver in this dir"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    tune_allocator()  # as the bwc-sim command line does
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed")
    default_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    parent = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=args.dir or default_dir))
    try:
        report = asyncio.run(bench(args, parent))
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    report["measured"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
