"""Seeded audio clips for the gunshot detector: gunshots, door slams and ambient noise.

Mono float32 PCM at 16 kHz, calibrated like the detector expects: |x| = 1.0 is
``FULL_SCALE_DB`` (150 dB SPL peak) and anything louder clips. Levels follow point-source
spreading, -20 dB per tenfold distance from the level at 1 m:

- gunshot: a Friedlander muzzle blast (instant rise, positive phase 0.4-2 ms, then the negative
  phase), 155-172 dB peak at 1 m by weapon, 2-50 m away, a ground reflection 0.3-4 ms later,
  and reverberation (RT60 0.2-1.5 s, 10-28 dB under the blast); rifles add a supersonic crack.
- door slam: two to four panel modes (car 40-200 Hz, house 60-350 Hz) swelling over 2-12 ms and
  ringing for 20-120 ms, with a latch click 6-20 dB under the thud; 105-125 dB at 1 m, 0.5-10 m.
- ambient: traffic-like brown/pink noise at 55-80 dB SPL, with speech-like bursts.

Every clip carries its ambient bed, so the detector always sees a noise floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

RATE_HZ = 16000
FULL_SCALE_DB = 150.0

FloatArray = npt.NDArray[np.float64]
Seed = int | np.random.Generator


@dataclass(frozen=True, slots=True)
class AudioClip:
    """A clip, the time of its event (None: no event) and the parameters drawn for it."""

    kind: str
    pcm: npt.NDArray[np.float32]
    event_s: float | None
    params: Mapping[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Duration of the clip."""
        return float(self.pcm.shape[0] / RATE_HZ)


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def amplitude(db_spl: float) -> float:
    """Linear amplitude of a level in dB SPL at this calibration."""
    return float(10.0 ** ((db_spl - FULL_SCALE_DB) / 20.0))


def colored_noise(rng: np.random.Generator, n: int, slope: float) -> FloatArray:
    """Unit-RMS noise whose power falls as 1/f**slope (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE_HZ)
    spectrum *= np.where(f > 20.0, f, 20.0) ** (-slope / 2.0)
    x = np.fft.irfft(spectrum, n)
    return np.asarray(x / (np.sqrt(np.mean(x**2)) or 1.0), dtype=np.float64)


def _ambient_bed(rng: np.random.Generator, n: int) -> tuple[FloatArray, float]:
    level = rng.uniform(55, 80)
    bed = amplitude(level) * colored_noise(rng, n, rng.uniform(1.0, 2.0))
    for _ in range(int(rng.integers(0, 4))):  # speech-like bursts: syllables of band noise
        length = int(rng.uniform(0.3, 1.2) * RATE_HZ)
        start = int(rng.integers(0, max(1, n - length)))
        t = np.arange(length) / RATE_HZ
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t), 0, None) ** 2
        voice = colored_noise(rng, length, 0.5) * syllables * amplitude(rng.uniform(60, 82))
        bed[start : start + length] += voice[: n - start]
    return bed, level


def _reverb(rng: np.random.Generator, n: int, rt60: float, gain: float) -> FloatArray:
    t = np.arange(n) / RATE_HZ
    return gain * colored_noise(rng, n, 0.8) * np.exp(-6.91 * t / rt60)


def _clip(kind: str, x: FloatArray, event_s: float | None, params: dict[str, float]) -> AudioClip:
    pcm = np.clip(x, -1.0, 1.0).astype(np.float32)
    return AudioClip(kind, pcm, event_s, MappingProxyType(params))


_WEAPONS = {"handgun": (155.0, 164.0), "rifle": (165.0, 172.0), "shotgun": (160.0, 167.0)}


def gunshot(seed: Seed, seconds: float = 0.6) -> AudioClip:
    """One shot at a random time in the first half of the clip (see the module doc)."""
    rng = _rng(seed)
    n = round(seconds * RATE_HZ)
    x, ambient_db = _ambient_bed(rng, n)
    weapon = str(rng.choice(list(_WEAPONS)))
    distance = float(math.exp(rng.uniform(math.log(2.0), math.log(50.0))))
    level = rng.uniform(*_WEAPONS[weapon]) - 20.0 * math.log10(distance)
    onset = rng.uniform(0.1, seconds / 2)
    positive = rng.uniform(0.0004, 0.002)
    shape = rng.uniform(1.0, 3.0)
    t = np.arange(n) / RATE_HZ - onset
    tau = np.where(t >= 0, t / positive, 0.0)
    blast = np.where(t >= 0, (1 - tau) * np.exp(-shape * tau), 0.0) * amplitude(level)
    first = onset  # the first arrival, the event's time
    if weapon == "rifle":  # the bullet's supersonic crack arrives first: a short N-wave
        lead = rng.uniform(0.002, 0.02)
        first = onset - lead
        crack_t = t + lead
        crack = np.where((crack_t >= 0) & (crack_t < 0.0003), 1 - 2 * crack_t / 0.0003, 0.0)
        blast += crack * amplitude(level - rng.uniform(3, 10))
    delay = int(rng.uniform(0.0003, 0.004) * RATE_HZ)
    blast[delay:] += rng.uniform(0.3, 0.8) * blast[: n - delay]  # ground reflection
    start = int((onset + rng.uniform(0.003, 0.03)) * RATE_HZ)
    rt60 = rng.uniform(0.2, 1.5)
    x[start:] += _reverb(rng, n - start, rt60, amplitude(level - rng.uniform(10, 28)))
    x += blast
    params = {"distance_m": distance, "level_db": level, "ambient_db": ambient_db, "rt60_s": rt60}
    return _clip(f"gunshot_{weapon}", x, first, params)


def door_slam(seed: Seed, seconds: float = 0.6) -> AudioClip:
    """A car or house door slammed at a random time in the first half of the clip."""
    rng = _rng(seed)
    n = round(seconds * RATE_HZ)
    x, ambient_db = _ambient_bed(rng, n)
    car = bool(rng.random() < 0.5)
    distance = float(math.exp(rng.uniform(math.log(0.5), math.log(10.0))))
    level = rng.uniform(105, 125) - 20.0 * math.log10(distance)
    onset = rng.uniform(0.1, seconds / 2)
    t = np.arange(n) / RATE_HZ - onset
    attack = rng.uniform(0.002, 0.012)
    swell = np.where(t < 0, 0.0, np.where(t < attack, (1 - np.cos(np.pi * t / attack)) / 2, 1.0))
    body = np.zeros(n)
    lo, hi = (40.0, 200.0) if car else (60.0, 350.0)
    for _ in range(int(rng.integers(2, 5))):
        f = rng.uniform(lo, hi)
        decay = rng.uniform(0.02, 0.12)
        ring = np.exp(-np.maximum(t - attack, 0) / decay) * np.sin(
            2 * np.pi * f * t + rng.uniform(0, 6)
        )
        body += rng.uniform(0.3, 1.0) * ring * swell
    body *= amplitude(level) / (np.max(np.abs(body)) or 1.0)
    click_at = onset + rng.uniform(-0.003, 0.005)
    click = colored_noise(rng, n, 0.0) * ((t >= click_at - onset) & (t < click_at - onset + 0.001))
    body += click * amplitude(level - rng.uniform(6, 20)) / 3.0
    x += body
    rt60 = rng.uniform(0.2, 1.0)
    start = int((onset + 0.005) * RATE_HZ)
    x[start:] += _reverb(rng, n - start, rt60, amplitude(level - rng.uniform(12, 25)))
    params = {"distance_m": distance, "level_db": level, "ambient_db": ambient_db, "rt60_s": rt60}
    return _clip("door_slam_car" if car else "door_slam_house", x, onset, params)


def ambient(seed: Seed, seconds: float = 2.0) -> AudioClip:
    """Traffic-like noise with speech-like bursts and no impulsive event."""
    rng = _rng(seed)
    x, ambient_db = _ambient_bed(rng, round(seconds * RATE_HZ))
    return _clip("ambient", x, None, {"ambient_db": ambient_db})


CLIPS: dict[str, Callable[[Seed], AudioClip]] = {
    "gunshot": gunshot,
    "door_slam": door_slam,
    "ambient": ambient,
}
"""Clip kinds and their generators; ``gunshot`` is the positive."""
