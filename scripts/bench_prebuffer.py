"""Benchmark the pre-event buffer's push path against a plain numpy copy of the same bytes.

Usage: .venv/bin/python scripts/bench_prebuffer.py [--seconds 120] [--repeat 3] [--json]

For each profile it times, on the same packets in the same run:
  push      PreEventBuffer.push (payload generated straight into the arena, trimming, index)
  payload   MediaSource.write_payload into a preallocated array (payload generation alone)
  copy      numpy slice copy of the already-made payloads into a preallocated ring (baseline)
  memcpy    one bulk numpy copy of all the payload bytes (the machine's ceiling)
and prints MB/s, packets/s and push's ratio to the copy baseline. Each contender runs once to warm
up, then --repeat rounds each run every contender once, so a round's figures share the machine's
state. The table shows the best of the rounds.

``--json`` prints one JSON object instead (progress goes to stderr): the settings (``seconds``,
``repeat``, ``profiles``), and per profile in ``rows``: each round's wall seconds, MB/s and
packets/s by contender, ``ratio`` (push MB/s over copy MB/s, one per round: ours / baseline, as
in the other scripts' JSON), and ``best`` (the table's figures); then the MediaSource figures,
``machine``, ``measured`` and ``load_average_before_after``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.packets import Stream
from device.prebuffer import PreEventBuffer, PreEventBufferConfig
from sim.media import VIDEO_PRESETS, MediaSource

PROFILES = ("720p30", "1080p30")
CONTENDERS = ("push", "payload", "copy", "memcpy")

Say = Callable[[str], None]


def log(text: str) -> None:
    """A progress line on stderr."""
    print(text, file=sys.stderr, flush=True)


def quiet(_text: str) -> None:
    """No progress: the table alone, as before ``--json`` existed."""


def contenders(name: str, seconds: float) -> tuple[dict[str, Callable[[], None]], int, int]:
    """Each contender's run over ``seconds`` of video of preset ``name``; packets; bytes."""
    source = MediaSource(1, "bench", VIDEO_PRESETS[name])
    packets = [p for p in source.packets_until(seconds) if p.stream is Stream.VIDEO]
    payloads = [np.frombuffer(source.payload(p), dtype=np.uint8) for p in packets]
    config = PreEventBufferConfig()  # 30 s, 96 MiB, video only: the camera's default
    ring = np.empty(config.max_bytes, dtype=np.uint8)
    ring_view = ring.data
    total = sum(p.size for p in packets)

    buffer = PreEventBuffer(config)

    def push() -> None:
        buffer.clear()  # steady state: the same arena, its pages already committed
        for packet in packets:
            buffer.push(packet, source)

    def payload() -> None:
        for packet in packets:
            offset = (
                0 if packet.size > len(ring) else packet.index * 7919 % (len(ring) - packet.size)
            )
            source.write_payload(packet, ring_view[offset : offset + packet.size])

    def copy() -> None:
        offset = 0
        for data in payloads:
            if offset + data.size > ring.size:
                offset = 0
            ring[offset : offset + data.size] = data
            offset += data.size

    flat = np.concatenate(payloads)
    target = np.empty_like(flat)

    def memcpy() -> None:
        np.copyto(target, flat)

    runs = {"push": push, "payload": payload, "copy": copy, "memcpy": memcpy}
    return runs, len(packets), total


def wall_time(run: Callable[[], None]) -> float:
    """Seconds one call of ``run`` takes."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_profile(name: str, seconds: float, repeat: int, say: Say) -> dict[str, Any]:
    """One profile's row: every round's figures by contender, their ratio, and the best."""
    runs, packets, total = contenders(name, seconds)
    for run in runs.values():
        run()  # warm up: arena and target pages committed, caches filled
    walls: dict[str, list[float]] = {label: [] for label in CONTENDERS}
    for i in range(repeat):
        for label in CONTENDERS:
            walls[label].append(wall_time(runs[label]))
        say(
            f"{name} round {i + 1}/{repeat}: push {total / walls['push'][-1] / 1e6:,.0f} MB/s, "
            f"copy {total / walls['copy'][-1] / 1e6:,.0f} MB/s"
        )
    best = {label: min(walls[label]) for label in CONTENDERS}
    return {
        "profile": name,
        "packets": packets,
        "bytes": total,
        "wall_s": walls,
        "mb_s": {label: [total / t / 1e6 for t in walls[label]] for label in CONTENDERS},
        "packets_s": {label: [packets / t for t in walls[label]] for label in CONTENDERS},
        "ratio": [c / p for p, c in zip(walls["push"], walls["copy"], strict=True)],
        "best": {
            label: {
                "wall_s": best[label],
                "mb_s": total / best[label] / 1e6,
                "packets_s": packets / best[label],
                "vs_copy": best["copy"] / best[label],
            }
            for label in CONTENDERS
        },
    }


def bench_source(seconds: float) -> tuple[float, float]:
    """Packets/s of MediaSource iteration (video + audio) and the time to skip 7.5 hours."""
    source = MediaSource(2, "bench", VIDEO_PRESETS["720p30"])
    start = time.perf_counter()
    count = sum(1 for _ in source.packets_until(seconds))
    rate = count / (time.perf_counter() - start)
    start = time.perf_counter()
    source.skip_to(seconds + 7.5 * 3600)
    return rate, time.perf_counter() - start


def bench(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    """Every profile's row and the MediaSource figures, with the settings and the machine."""
    load = [os.getloadavg()[0]]
    rows = [bench_profile(name, args.seconds, args.repeat, say) for name in PROFILES]
    rate, skip_s = bench_source(args.seconds)
    load.append(os.getloadavg()[0])
    return {
        "seconds": args.seconds,
        "repeat": args.repeat,
        "profiles": list(PROFILES),
        "rows": rows,
        "media_source_packets_s": rate,
        "media_source_skip_7_5_h_s": skip_s,
        "load_average_before_after": load,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def print_table(report: dict[str, Any]) -> None:
    """The best round of each contender, by profile, and the MediaSource figures."""
    header = f"{'profile':<9}{'contender':<10}{'MB/s':>9}{'packets/s':>12}{'vs copy':>9}"
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        name = row["profile"]
        for label in CONTENDERS:
            best = row["best"][label]
            print(
                f"{name:<9}{label:<10}{best['mb_s']:>9.0f}{best['packets_s']:>12.0f}"
                f"{best['vs_copy']:>8.2f}x"
            )
    print(
        f"\nMediaSource: {report['media_source_packets_s']:,.0f} packets/s (720p30 video + audio)"
    )
    print(f"MediaSource.skip_to over 7.5 h: {report['media_source_skip_7_5_h_s'] * 1e6:.0f} us")


def main() -> None:
    """Run the benchmark; print the table, or with ``--json`` one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="media per profile")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every contender")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be positive and --repeat at least 1")
    report = bench(args, log if args.json else quiet)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
