"""Benchmark the CPU an aiomqtt subscriber spends receiving large messages, with and without the
allocator tuning of ``sim.tuning.tune_allocator`` (before and now), against ``mosquitto_sub``.

Usage: .venv/bin/python scripts/bench_receive.py [--messages 200] [--size 1048576] [--repeat 3]
       [--json]

One private mosquitto on loopback; ``mosquitto_pub`` publishes ``--messages`` messages of
``--size`` random bytes at QoS 1 as fast as it can. Four subscribers take them in turn, each a
fresh process subscribed before the publisher starts: aiomqtt with glibc's defaults (``none``);
aiomqtt with only ``M_MMAP_THRESHOLD`` raised to 64 MiB (``mmap``: what ``tune_allocator`` did
before, to keep the segment writer's blocks in the heap); aiomqtt after today's
``tune_allocator()`` (``both``: ``M_TRIM_THRESHOLD`` raised too); and ``mosquitto_sub`` (the C
client). Each reports its user + system CPU seconds per GB received and its minor page faults
per MiB. Setting ``M_MMAP_THRESHOLD`` switches off glibc's dynamic trim threshold, so the top of
the heap was handed back after every message and the next one faulted the same pages in again;
the ratio is ``both`` / ``mmap`` per repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.broker import PrivateBroker

TOPIC = "bench/receive"
VARIANTS = ("none", "mmap", "both")
"""glibc's defaults; the mmap threshold alone (tune_allocator before); mmap and trim (now)."""

SUBSCRIBER = """
import asyncio, json, resource, sys
sys.path.insert(0, {root!r})
import aiomqtt, ctypes, ctypes.util
from sim.tuning import tune_allocator
if {tuning!r} == "both":
    tune_allocator()
elif {tuning!r} == "mmap":  # what tune_allocator did before the trim threshold was added
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 64 * 1024 * 1024)

async def main():
    async with aiomqtt.Client({host!r}, {port}, identifier={ident!r},
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe({topic!r}, qos=1)
        print("ready", flush=True)
        count, before = 0, resource.getrusage(resource.RUSAGE_SELF)
        async for _message in client.messages:
            count += 1
            if count == {messages}:
                break
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({{
            "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime,
            "minflt": after.ru_minflt - before.ru_minflt,
        }}), flush=True)

asyncio.run(main())
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def publish(broker: PrivateBroker, payload: Path, messages: int) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            *("-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1"),
            *("-t", TOPIC, "-f", str(payload), "--repeat", str(messages), "--repeat-delay", "0"),
        ],
        check=True,
    )


def python_subscriber(
    broker: PrivateBroker, payload: Path, messages: int, *, tuning: str, ident: str
) -> dict[str, float]:
    """One aiomqtt subscriber process: CPU and page faults while receiving ``messages``."""
    code = SUBSCRIBER.format(
        root=str(Path(__file__).resolve().parent.parent),
        tuning=tuning,
        host=broker.host,
        port=broker.port,
        ident=ident,
        topic=TOPIC,
        messages=messages,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_no_blas_threads()
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise SystemExit("the subscriber did not start")
    publish(broker, payload, messages)
    result: dict[str, float] = json.loads(child.stdout.readline())
    child.wait(timeout=60)
    return result


def c_subscriber(broker: PrivateBroker, payload: Path, messages: int) -> dict[str, float]:
    """``mosquitto_sub``: its CPU from the kernel's accounting of reaped children.

    The publisher is reaped first (it exits before the subscriber has everything), so the
    accounting between the two reaps is the subscriber's alone.
    """
    child = subprocess.Popen(
        [
            "mosquitto_sub",
            *("-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1"),
            *("-t", TOPIC, "-C", str(messages), "-N"),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)  # no readiness signal from mosquitto_sub; it subscribes in well under this
    publish(broker, payload, messages)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child.wait(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "minflt": after.ru_minflt - before.ru_minflt,
    }


def _no_blas_threads() -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    gigabytes = args.messages * args.size / 1e9
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        payload = Path(tmp) / "payload"
        payload.write_bytes(os.urandom(args.size))
        async with PrivateBroker(kind="mosquitto", persistence=False) as broker:
            for i in range(args.repeat):
                run = {
                    name: python_subscriber(
                        broker, payload, args.messages, tuning=name, ident=f"{name}{i}"
                    )
                    for name in VARIANTS
                }
                c = c_subscriber(broker, payload, args.messages)
                run["mosquitto_sub"] = c
                runs.append(run)
                log(
                    f"  run {i + 1}: CPU s/GB "
                    + ", ".join(f"{n} {_per_gb(r, gigabytes):.2f}" for n, r in run.items())
                )
    rows = {}
    for name in (*VARIANTS, "mosquitto_sub"):
        rows[name] = {
            "cpu_s_per_gb": statistics.median(_per_gb(r[name], gigabytes) for r in runs),
            "sys_s_per_gb": statistics.median(r[name]["sys_s"] / gigabytes for r in runs),
            "minflt_per_mib": statistics.median(
                r[name]["minflt"] / (args.messages * args.size / 2**20) for r in runs
            ),
        }
    ratios = [
        _per_gb(r["both"], gigabytes) / max(1e-9, _per_gb(r["mmap"], gigabytes)) for r in runs
    ]
    return {
        "messages": args.messages,
        "size": args.size,
        "repeat": args.repeat,
        "rows": rows,
        "now_over_before": statistics.median(ratios),
        "now_over_before_range": [min(ratios), max(ratios)],
    }


def _per_gb(result: dict[str, float], gigabytes: float) -> float:
    return (result["user_s"] + result["sys_s"]) / gigabytes


def print_table(report: dict[str, Any]) -> None:
    print(
        f"Receiving {report['messages']} x {report['size']:,} B at QoS 1, "
        f"median of {report['repeat']}:"
    )
    print(f"{'subscriber':>16} | {'CPU s/GB':>8} | {'of it sys':>9} | {'faults/MiB':>10}")
    for name, row in report["rows"].items():
        print(
            f"{name:>16} | {row['cpu_s_per_gb']:8.2f} | {row['sys_s_per_gb']:9.2f} | "
            f"{row['minflt_per_mib']:10.1f}"
        )
    low, high = report["now_over_before_range"]
    print(f"both / mmap (now / before) CPU: {report['now_over_before']:.2f} ({low:.2f}-{high:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200, help="messages per subscriber")
    parser.add_argument("--size", type=int, default=1024 * 1024, help="bytes per message")
    parser.add_argument("--repeat", type=int, default=3, help="runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
