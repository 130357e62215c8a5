"""Seeded IMU episodes of a chest-worn camera at 100 Hz: activities, falls and hard negatives.

Body frame: x to the officer's right, y up the spine, z forward out of the chest. The
accelerometer reads specific force in g (upright at rest: about (0, 1, 0)); the gyro reads deg/s.
Each episode is built from segments (standing, walking, running, a fall, a jump ...) sharing one
random person (cadence, amplitude, lean) and one random sensor (bias, noise, mounting tilt).

The signals are models, not recordings: running is a half-sine ground-reaction pulse per step
whose mean is 1 g (so duty cycle sets the peak, about 2-2.9 g), walking a sinusoid with a
harmonic, a fall a tumble through 55-100 degrees with a near-weightless phase, a short impact and
a settle. Every segment is computed with numpy, so 1,000 episodes take a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

RATE_HZ = 100.0
UP = np.array([0.0, 1.0, 0.0])

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ImuEpisode:
    """One episode: samples plus the ground truth (``events``: name -> time in seconds)."""

    kind: str
    t: FloatArray
    accel: FloatArray
    gyro: FloatArray
    events: Mapping[str, float] = field(default_factory=dict)


def rotate(v: FloatArray, axis: FloatArray, angle_rad: FloatArray | float) -> FloatArray:
    """Rotate vectors ``v`` (N,3 or 3) about unit ``axis`` by ``angle_rad`` (Rodrigues)."""
    ang = np.asarray(angle_rad, dtype=np.float64)[..., None]
    cos, sin = np.cos(ang), np.sin(ang)
    cross = np.cross(axis, v)
    dot = np.sum(v * axis, axis=-1, keepdims=True)
    return np.asarray(v * cos + cross * sin + axis * dot * (1.0 - cos), dtype=np.float64)


def _half_sine(n: int) -> FloatArray:
    return np.sin(np.pi * (np.arange(n) + 0.5) / n)


class EpisodeBuilder:
    """Appends segments of (accel, gyro) and remembers the posture the body is in."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.accel: list[FloatArray] = []
        self.gyro: list[FloatArray] = []
        self.n = 0
        lean = math.radians(rng.uniform(0.0, 10.0))
        self.up = rotate(UP, np.array([1.0, 0.0, 0.0]), lean)  # gravity reading when upright
        self.cadence_walk = rng.uniform(1.6, 2.2)
        self.amp_walk = rng.uniform(0.15, 0.4)
        self.cadence_run = rng.uniform(2.4, 3.6)
        self.duty_run = rng.uniform(0.55, 0.8)

    @property
    def now(self) -> float:
        return self.n / RATE_HZ

    def add(self, accel: FloatArray, gyro: FloatArray) -> None:
        self.accel.append(accel)
        self.gyro.append(gyro)
        self.n += accel.shape[0]

    def _sway(self, n: int, g_amp: float, dps_amp: float) -> tuple[FloatArray, FloatArray]:
        t = np.arange(n)[:, None] / RATE_HZ
        f = self.rng.uniform(0.1, 0.6, size=(1, 3))
        ph = self.rng.uniform(0, 2 * np.pi, size=(2, 3))
        acc = g_amp * np.sin(2 * np.pi * f * t + ph[0])
        gyr = dps_amp * np.sin(2 * np.pi * f * t + ph[1])
        return acc, gyr

    def still(self, seconds: float, up: FloatArray | None = None, *, fidget: bool = False) -> None:
        """Standing, sitting or lying still in posture ``up`` (default: upright)."""
        n = round(seconds * RATE_HZ)
        acc, gyr = self._sway(n, self.rng.uniform(0.003, 0.02), self.rng.uniform(0.3, 2.0))
        if fidget and n > 100:  # weight shifts: small bumps that are not steps
            for start in self.rng.integers(0, n - 60, size=int(self.rng.integers(0, 4))):
                bump = _half_sine(50)[:, None] * self.rng.normal(0, 0.06, size=3)
                acc[start : start + 50] += bump
                gyr[start : start + 50] += _half_sine(50)[:, None] * self.rng.normal(0, 8, 3)
        self.add((self.up if up is None else up) + acc, gyr)

    def _phase(self, n: int, cadence: float) -> FloatArray:
        drift = 1.0 + 0.03 * np.sin(2 * np.pi * self.rng.uniform(0.05, 0.2) * np.arange(n) / 100)
        jitter = 1.0 + self.rng.normal(0, 0.01, size=n)
        return np.asarray(
            2 * np.pi * np.cumsum(cadence * drift * jitter) / RATE_HZ + self.rng.uniform(0, 6),
            dtype=np.float64,
        )

    def walk(self, seconds: float) -> None:
        """Walking at the person's walking cadence (1.6-2.2 steps/s)."""
        n = round(seconds * RATE_HZ)
        a = self.amp_walk
        ph = self._phase(n, self.cadence_walk)
        acc = np.empty((n, 3))
        acc[:, 0] = 0.4 * a * np.sin(ph / 2)
        acc[:, 1] = a * np.sin(ph) + 0.3 * a * np.sin(2 * ph + 1.0)
        acc[:, 2] = 0.6 * a * np.cos(ph)
        amp = self.rng.uniform([3, 5, 3], [8, 20, 8])
        gyr = amp * np.stack((np.sin(ph), np.sin(ph / 2), np.sin(ph / 2 + 0.5)), axis=1)
        self.add(self.up + acc, gyr)

    def run(self, seconds: float) -> None:
        """Running: one ground-reaction pulse per step, near zero g in the flight phase."""
        n = round(seconds * RATE_HZ)
        duty = self.duty_run
        ph = self._phase(n, self.cadence_run)
        frac = (ph / (2 * np.pi)) % 1.0
        stance = frac < duty
        peak = np.pi / (2 * duty)  # a half-sine of this peak over the stance averages 1 g
        vertical = np.where(stance, peak * np.sin(np.pi * frac / duty), 0.0)
        vertical += np.where(stance, self.rng.uniform(0.2, 1.0) * np.exp(-frac / 0.04), 0.0)
        lean_up = rotate(self.up, np.array([1.0, 0.0, 0.0]), math.radians(self.rng.uniform(3, 15)))
        acc = vertical[:, None] * lean_up
        acc[:, 0] += self.rng.uniform(0.1, 0.3) * np.sin(ph / 2)
        acc[:, 2] += self.rng.uniform(0.15, 0.45) * np.cos(ph)
        amp = self.rng.uniform([10, 20, 8], [25, 50, 20])
        gyr = amp * np.stack((np.sin(ph), np.sin(ph / 2), np.sin(ph / 2 + 0.5)), axis=1)
        self.add(acc, gyr)

    def jolt(self, peak_g: float, dur_s: float, dps: float, up: FloatArray) -> None:
        """An impact: a half-sine of ``peak_g`` mostly along ``up``, and a decaying spin."""
        n = max(2, round(dur_s * RATE_HZ))
        direction = up + self.rng.normal(0, 0.3, 3)
        direction /= np.linalg.norm(direction)
        acc = up + (peak_g - 1.0) * _half_sine(n)[:, None] * direction
        spin = self.rng.normal(0, 1, 3)
        gyr = dps * np.exp(-np.arange(n) / (0.5 * n))[:, None] * spin / np.linalg.norm(spin)
        self.add(acc, gyr)

    def settle(self, seconds: float, up: FloatArray, g_amp: float, dps: float) -> None:
        """Damped wobble after an impact or a landing."""
        n = max(1, round(seconds * RATE_HZ))
        t = np.arange(n)[:, None] / RATE_HZ
        decay = np.exp(-t / max(0.05, seconds / 3))
        acc = up + g_amp * decay * np.sin(2 * np.pi * 3 * t + self.rng.uniform(0, 6, 3))
        gyr = dps * decay * np.sin(2 * np.pi * 2 * t + self.rng.uniform(0, 6, 3))
        self.add(acc, gyr)

    def tumble(self, axis: FloatArray, deg: float, level_g: FloatArray) -> None:
        """Rotate the posture by ``deg`` about ``axis`` while |a| follows ``level_g``."""
        n = level_g.shape[0]
        s = (1 - np.cos(np.pi * (np.arange(n) + 1) / n)) / 2  # smooth 0 -> 1
        angle = np.radians(deg) * s
        posture = rotate(self.up, axis, angle)
        rate = np.gradient(angle, 1 / RATE_HZ) if n > 1 else np.zeros(n)
        acc = posture * level_g[:, None] + self.rng.normal(0, 0.03, size=(n, 3))
        self.add(acc, np.degrees(rate)[:, None] * axis + self.rng.normal(0, 10, size=(n, 3)))
        self.up = posture[-1]

    def build(self, kind: str, events: Mapping[str, float]) -> ImuEpisode:
        """Concatenate, then apply the sensor: mounting tilt, bias, noise, range clipping."""
        acc = np.concatenate(self.accel)
        gyr = np.concatenate(self.gyro)
        axis = self.rng.normal(0, 1, 3)
        axis /= np.linalg.norm(axis)
        mount = math.radians(self.rng.uniform(0, 15))
        acc = rotate(acc, axis, mount) + self.rng.normal(0, 0.02, 3)
        gyr = rotate(gyr, axis, mount) + self.rng.normal(0, 1.0, 3)
        acc += self.rng.normal(0, self.rng.uniform(0.005, 0.02), acc.shape)
        gyr += self.rng.normal(0, self.rng.uniform(0.2, 1.0), gyr.shape)
        t = np.arange(acc.shape[0]) / RATE_HZ
        return ImuEpisode(
            kind,
            t,
            np.clip(acc, -16, 16),
            np.clip(gyr, -2000, 2000),
            MappingProxyType(dict(events)),
        )


def horizontal_axis(rng: np.random.Generator) -> FloatArray:
    beta = rng.uniform(0, 2 * np.pi)
    return np.array([math.cos(beta), 0.0, math.sin(beta)])
