"""IMU episode generators by kind: what the detectors must find and what they must ignore.

Every generator takes a seed (or a numpy ``Generator``) and returns an ``ImuEpisode`` whose
``events`` hold the ground truth: ``fall_impact`` (falls), ``run_start`` and ``run_stop``
(running). ``EPISODES`` maps kind names to generators, for the quality script.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.sensors.imu import EpisodeBuilder, ImuEpisode, horizontal_axis

Seed = int | np.random.Generator
Generate = Callable[[Seed], ImuEpisode]
"""An episode generator: a seed in, an episode out."""


def _builder(seed: Seed) -> EpisodeBuilder:
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return EpisodeBuilder(rng)


def standing(seed: Seed, seconds: float = 12.0) -> ImuEpisode:
    """Standing with small sway and a few weight shifts."""
    b = _builder(seed)
    b.still(seconds, fidget=True)
    return b.build("standing", {})


def walking(seed: Seed) -> ImuEpisode:
    """Standing, 12-20 s of walking (1.6-2.2 Hz, 0.15-0.4 g), standing."""
    b = _builder(seed)
    b.still(b.rng.uniform(0.5, 1.5))
    b.walk(b.rng.uniform(12, 20))
    b.still(b.rng.uniform(1, 2))
    return b.build("walking", {})


def running(seed: Seed) -> ImuEpisode:
    """Standing or walking, 8-15 s of running (2.4-3.6 Hz), then standing still for 5-7 s."""
    b = _builder(seed)
    b.still(b.rng.uniform(1, 2))
    if b.rng.random() < 0.5:
        b.walk(b.rng.uniform(1, 3))
    start = b.now
    b.run(b.rng.uniform(8, 15))
    stop = b.now
    b.walk(b.rng.uniform(0, 1.5))
    b.still(b.rng.uniform(5, 7))
    return b.build("running", {"run_start": start, "run_stop": stop})


def fall(seed: Seed) -> ImuEpisode:
    """Standing, walking or running, then a fall: tumble, impact, settle, lying still 4-7 s."""
    b = _builder(seed)
    before = b.rng.choice(("still", "walk", "run"))
    b.still(b.rng.uniform(1, 2))
    getattr(b, str(before))(b.rng.uniform(2, 5))
    axis = horizontal_axis(b.rng)
    loss_n = round(b.rng.uniform(0.1, 0.3) * 100)
    ff_n = round(b.rng.uniform(0.25, 0.6) * 100)
    depth = b.rng.uniform(0.05, 0.45)
    level = np.concatenate(
        (np.linspace(1.0, depth, loss_n), depth + b.rng.uniform(-0.04, 0.04, ff_n))
    )
    b.tumble(axis, b.rng.uniform(55, 90), np.abs(level))
    impact = b.now
    b.jolt(b.rng.uniform(2.5, 6.0), b.rng.uniform(0.03, 0.08), b.rng.uniform(100, 400), b.up)
    extra = b.rng.uniform(0, 10)
    b.tumble(axis, extra, np.ones(20))
    b.settle(b.rng.uniform(0.2, 1.2), b.up, b.rng.uniform(0.1, 0.5), b.rng.uniform(10, 60))
    b.still(b.rng.uniform(4, 7), b.up)
    return b.build("fall", {"fall_impact": impact})


def jump(seed: Seed) -> ImuEpisode:
    """One to three jumps (0.2-0.45 s weightless, landing 2.5-5 g), then standing still."""
    b = _builder(seed)
    b.still(b.rng.uniform(1, 2))
    for _ in range(int(b.rng.integers(1, 4))):
        b.add(b.up * np.linspace(1, 0.7, 20)[:, None], np.zeros((20, 3)))  # crouch
        b.jolt(b.rng.uniform(1.5, 2.2), 0.2, 20, b.up)  # push off
        flight = round(b.rng.uniform(0.2, 0.45) * 100)
        b.add(
            b.up * b.rng.uniform(0.02, 0.15) + b.rng.normal(0, 0.03, (flight, 3)),
            np.zeros((flight, 3)),
        )
        b.jolt(b.rng.uniform(2.5, 5.0), b.rng.uniform(0.05, 0.1), b.rng.uniform(20, 80), b.up)
        b.settle(0.3, b.up, 0.3, 20)
        b.still(b.rng.uniform(0.3, 1.5))
    b.still(b.rng.uniform(4, 6))
    return b.build("jump", {})


def sit_hard(seed: Seed) -> ImuEpisode:
    """Walking, then dropping hard onto a seat (leaning back 10-35 degrees) and sitting still."""
    b = _builder(seed)
    b.walk(b.rng.uniform(2, 4))
    b.still(0.5)
    drop = b.rng.uniform(0.15, 0.35)
    level = np.full(round(drop * 100), b.rng.uniform(0.3, 0.8))
    b.tumble(np.array([1.0, 0.0, 0.0]), -b.rng.uniform(10, 35), level)
    b.jolt(b.rng.uniform(1.5, 3.5), b.rng.uniform(0.06, 0.12), b.rng.uniform(30, 150), b.up)
    b.settle(0.3, b.up, 0.2, 15)
    b.still(b.rng.uniform(5, 7), b.up, fidget=True)
    return b.build("sit_hard", {})


def stumble(seed: Seed) -> ImuEpisode:
    """Walking, a trip (brief dip, a 1.8-3.5 g jolt, a fast twist), and walking on."""
    b = _builder(seed)
    b.walk(b.rng.uniform(3, 5))
    upright = b.up
    dip = np.full(round(b.rng.uniform(0.08, 0.2) * 100), b.rng.uniform(0.3, 0.7))
    axis = horizontal_axis(b.rng)
    b.tumble(axis, b.rng.uniform(10, 25), dip)
    b.jolt(b.rng.uniform(1.8, 3.5), b.rng.uniform(0.05, 0.1), b.rng.uniform(150, 350), b.up)
    b.tumble(axis, 0.0, np.ones(30))
    b.up = upright  # caught the trip: back upright
    b.walk(b.rng.uniform(4, 8))
    return b.build("stumble", {})


def vehicle_entry(seed: Seed) -> ImuEpisode:
    """Walking to a car, turning, ducking in, dropping onto the seat, engine idling."""
    b = _builder(seed)
    upright = b.up
    b.walk(b.rng.uniform(2, 4))
    b.still(b.rng.uniform(0.5, 1))
    turn = round(b.rng.uniform(0.6, 1.2) * 100)
    b.add(np.tile(b.up, (turn, 1)), np.tile([0.0, b.rng.uniform(60, 120), 0.0], (turn, 1)))
    b.tumble(np.array([1.0, 0.0, 0.0]), b.rng.uniform(25, 40), np.ones(50))
    b.tumble(np.array([1.0, 0.0, 0.0]), 0.0, np.full(25, b.rng.uniform(0.5, 0.8)))
    b.jolt(b.rng.uniform(1.3, 2.2), 0.1, b.rng.uniform(20, 80), b.up)
    b.up = upright
    b.tumble(np.array([1.0, 0.0, 0.0]), -b.rng.uniform(15, 35), np.ones(60))
    n = round(b.rng.uniform(5, 8) * 100)
    t = np.arange(n)[:, None] / 100
    engine = b.rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * b.rng.uniform(24, 33) * t)
    b.add(b.up + engine, b.rng.normal(0, 1.5, (n, 3)))
    return b.build("vehicle_entry", {})


EPISODES: dict[str, Generate] = {
    "fall": fall,
    "running": running,
    "walking": walking,
    "standing": standing,
    "jump": jump,
    "sit_hard": sit_hard,
    "stumble": stumble,
    "vehicle_entry": vehicle_entry,
}
"""Episode kinds and their generators; ``fall`` and ``running`` are the positives."""
