"""Benchmark the pre-event buffer's push path against a plain numpy copy of the same bytes.

Usage: .venv/bin/python scripts/bench_prebuffer.py [--seconds 120] [--repeat 3]

For each profile it times, on the same packets in the same run:
  push      PreEventBuffer.push (payload generated straight into the arena, trimming, index)
  payload   MediaSource.write_payload into a preallocated array (payload generation alone)
  copy      numpy slice copy of the already-made payloads into a preallocated ring (baseline)
  memcpy    one bulk numpy copy of all the payload bytes (the machine's ceiling)
and prints MB/s, packets/s and push's ratio to the copy baseline. Rates are best of --repeat.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.packets import Stream
from device.prebuffer import PreEventBuffer, PreEventBufferConfig
from sim.media import VIDEO_PRESETS, MediaSource


def best_of(repeat: int, run: Callable[[], None]) -> float:
    """Fastest wall time of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_profile(name: str, seconds: float, repeat: int) -> dict[str, float]:
    """Seconds taken by each contender on ``seconds`` of video of preset ``name``."""
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

    push()  # warm up: arena pages committed, caches filled
    copy()
    times = {
        label: best_of(repeat, run)
        for label, run in (("push", push), ("payload", payload), ("copy", copy), ("memcpy", memcpy))
    }
    times["packets"] = len(packets)
    times["bytes"] = total
    return times


def bench_source(seconds: float) -> tuple[float, float]:
    """Packets/s of MediaSource iteration (video + audio) and the time to skip 7.5 hours."""
    source = MediaSource(2, "bench", VIDEO_PRESETS["720p30"])
    start = time.perf_counter()
    count = sum(1 for _ in source.packets_until(seconds))
    rate = count / (time.perf_counter() - start)
    start = time.perf_counter()
    source.skip_to(seconds + 7.5 * 3600)
    return rate, time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="media per profile")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender")
    args = parser.parse_args()
    header = f"{'profile':<9}{'contender':<10}{'MB/s':>9}{'packets/s':>12}{'vs copy':>9}"
    print(header)
    print("-" * len(header))
    for name in ("720p30", "1080p30"):
        times = bench_profile(name, args.seconds, args.repeat)
        for label in ("push", "payload", "copy", "memcpy"):
            mb_s = times["bytes"] / times[label] / 1e6
            rate = times["packets"] / times[label]
            ratio = times["copy"] / times[label]
            print(f"{name:<9}{label:<10}{mb_s:>9.0f}{rate:>12.0f}{ratio:>8.2f}x")
    rate, skip_s = bench_source(args.seconds)
    print(f"\nMediaSource: {rate:,.0f} packets/s (720p30 video + audio)")
    print(f"MediaSource.skip_to over 7.5 h: {skip_s * 1e6:.0f} us")


if __name__ == "__main__":
    main()
