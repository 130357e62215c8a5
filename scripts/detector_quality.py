"""Measure the trigger detectors on seeded synthetic episodes: detection and false activation rates.

Usage: .venv/bin/python scripts/detector_quality.py [--episodes 1000] [--seed 1] [--json]

For every kind of episode (IMU: fall, running, walking, standing, jump, sit_hard, stumble,
vehicle_entry; audio: gunshot, door_slam, ambient; GPS: geofence crossing, walking along the
boundary) it generates ``--episodes`` episodes, each from its own seed ``(seed, kind, i)``, feeds
them to the detectors with their default configs and counts:

  detected   positives only: episodes where the expected detection happened (fall: exactly one
             officer_down; running: a foot_pursuit start; gunshot: a gunshot; crossing: exactly
             one entry then one exit)
  false      episodes with any detection that should not be there (for falls, a foot pursuit is
             allowed: some falls happen while running)
  latency    median seconds from the ground-truth event to the decision (positives)

It also reports the detectors' real-time factor (seconds of signal per second of CPU). Progress
goes to stderr; the table (or JSON with --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.detect import Detection, GeofenceTracker, GunshotDetector, ImuDetectors
from device.detect.geofence import Geofence
from sim.sensors import CLIPS, EPISODES, GpsTrack, gps_track
from sim.sensors.audio import RATE_HZ
from sim.sensors.gps import offset

BASE = (38.8895, -77.0353)


@dataclass
class Row:
    """The measured quality of one kind of episode."""

    kind: str
    expected: str
    episodes: int = 0
    detected: int = 0
    false: int = 0
    latencies: list[float] = field(default_factory=list)
    signal_s: float = 0.0
    cpu_s: float = 0.0

    def summary(self) -> dict[str, object]:
        """JSON-ready numbers."""
        out = asdict(self)
        del out["latencies"]
        out["detection_rate"] = self.detected / self.episodes if self.expected != "-" else None
        out["false_rate"] = self.false / self.episodes
        out["median_latency_s"] = statistics.median(self.latencies) if self.latencies else None
        return out


def _timed(feed: Callable[[], list[Detection]], row: Row) -> list[Detection]:
    start = time.perf_counter()
    found = feed()
    row.cpu_s += time.perf_counter() - start
    return found


def imu_kind(kind: str, rngs: Iterator[np.random.Generator], row: Row) -> None:
    """Run IMU episodes of ``kind`` and score them."""
    for rng in rngs:
        ep = EPISODES[kind](rng)
        found = _timed(partial(ImuDetectors().feed, ep.t, ep.accel, ep.gyro), row)
        row.signal_s += float(ep.t[-1])
        downs = [d for d in found if d.kind == "officer_down"]
        starts = [d for d in found if d.kind == "foot_pursuit" and d.active]
        if kind == "fall":
            ok = len(downs) == 1
            row.false += len(downs) > 1
            if ok:
                row.latencies.append(downs[0].at_s - ep.events["fall_impact"])
        elif kind == "running":
            ok = bool(starts)
            row.false += bool(downs)
            if ok:
                row.latencies.append(starts[0].at_s - ep.events["run_start"])
        else:
            ok = False
            row.false += bool(found)
        row.detected += ok
        row.episodes += 1


def audio_kind(kind: str, rngs: Iterator[np.random.Generator], row: Row) -> None:
    """Run audio clips of ``kind`` and score them."""
    for rng in rngs:
        clip = CLIPS[kind](rng)
        found = _timed(partial(GunshotDetector().feed, 0.0, clip.pcm), row)
        row.signal_s += clip.seconds
        if kind == "gunshot" and clip.event_s is not None:
            row.detected += len(found) >= 1
            row.false += len(found) > 1
            if found:
                row.latencies.append(found[0].at_s - clip.event_s)
        else:
            row.false += bool(found)
        row.episodes += 1


def geofence_kind(kind: str, rngs: Iterator[np.random.Generator], row: Row) -> None:
    """Walk through a 200 m square (``geofence_cross``) or along its edge (``_boundary``)."""
    corners = [(-100, -100), (-100, 100), (100, 100), (100, -100)]
    fence = Geofence("yard", tuple(offset(*BASE, n, e) for n, e in corners))
    for rng in rngs:
        north = 0.0 if kind == "geofence_cross" else -100.0 + rng.uniform(-2, 2)
        route = [offset(*BASE, north, -160), offset(*BASE, north, 160)]
        loss_at = rng.uniform(0, 200)
        track = gps_track(rng, route, jitter_m=rng.uniform(1, 5), loss=((loss_at, loss_at + 20),))
        tracker = GeofenceTracker((fence,))

        def feed(track: GpsTrack = track, tracker: GeofenceTracker = tracker) -> list[Detection]:
            return [d for t, fix in track.fixes() for d in tracker.update(t, fix)]

        found = _timed(feed, row)
        row.signal_s += float(track.t[-1])
        if kind == "geofence_cross":
            ok = [d.active for d in found] == [True, False]
            row.detected += ok
            row.false += not ok and bool(found)
            if ok:
                row.latencies.append(found[0].at_s - 60 / 1.4)
        else:
            row.false += bool(found)
        row.episodes += 1


KINDS: list[tuple[str, str, Callable[[str, Iterator[np.random.Generator], Row], None]]] = [
    ("fall", "officer_down", imu_kind),
    ("running", "foot_pursuit", imu_kind),
    *((k, "-", imu_kind) for k in EPISODES if k not in {"fall", "running"}),
    ("gunshot", "gunshot", audio_kind),
    ("door_slam", "-", audio_kind),
    ("ambient", "-", audio_kind),
    ("geofence_cross", "geofence", geofence_kind),
    ("geofence_boundary", "-", geofence_kind),
]


def measure(episodes: int, seed: int, console: Console) -> list[Row]:
    """Run every kind; ``episodes`` each, seeded by ``(seed, kind index, episode index)``."""
    rows = [Row(kind, expected) for kind, expected, _ in KINDS]
    with Progress(console=console, transient=True) as progress:
        for k, (kind, _, run) in enumerate(KINDS):
            task = progress.add_task(kind, total=episodes)

            def rngs(k: int = k, task: TaskID = task) -> Iterator[np.random.Generator]:
                for i in range(episodes):
                    yield np.random.default_rng([seed, k, i])
                    progress.advance(task)

            run(kind, rngs(), rows[k])
    return rows


def render(rows: list[Row], wall_s: float, console: Console) -> None:
    """Print the table."""
    table = Table(title=f"Detector quality ({rows[0].episodes} episodes per kind, {wall_s:.1f} s)")
    for name in ("kind", "expects", "detected", "false", "median latency", "real-time x"):
        left = name in {"kind", "expects"}
        table.add_column(name, justify="left" if left else "right", no_wrap=left)
    for row in rows:
        s = row.summary()
        det = s["detection_rate"]
        lat = s["median_latency_s"]
        table.add_row(
            row.kind,
            row.expected,
            "" if det is None else f"{100 * float(str(det)):.1f} %",
            f"{100 * row.false / row.episodes:.1f} %",
            "" if lat is None else f"{float(str(lat)):.2f} s",
            f"{row.signal_s / max(row.cpu_s, 1e-9):,.0f}",
        )
    console.print(table)


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    start = time.perf_counter()
    rows = measure(args.episodes, args.seed, Console(stderr=True))
    wall = time.perf_counter() - start
    if args.json:
        report = {
            "episodes": args.episodes,
            "seed": args.seed,
            "wall_s": wall,
            "audio_rate_hz": RATE_HZ,
            "kinds": [r.summary() for r in rows],
        }
        print(json.dumps(report, indent=2))
    else:
        render(rows, wall, Console())


if __name__ == "__main__":
    main()
