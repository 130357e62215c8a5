"""Officer-down (fall) detection from the body-worn IMU, and both IMU detectors run together.

Input: samples at ``rate_hz`` (100 Hz), ``t`` (N,) in seconds, ``accel`` (N,3) in g (specific
force: an upright camera at rest reads about +1 g along its up axis), ``gyro`` (N,3) in deg/s.

The fall pattern (docs/detectors.md): free fall, |a| < ``freefall_g`` for ``freefall_min_s``;
then within ``impact_window_s`` an impact, |a| > ``impact_g`` or |w| > ``impact_dps``; then,
starting within ``settle_s`` of the last impact, ``still_s`` of lying still (|a| within
``still_tol_g`` of 1 g, |w| < ``still_dps``) with the gravity direction tilted at least
``min_tilt_deg`` from where it was before the fall. One ``officer_down`` detection is made at
the end of the stillness. The tilt check is what separates a fall from a jump, a hard sit or a
runner who stops: all of them end still, but upright.

Per-sample features are computed with numpy on the whole batch; a Python loop visits only the
samples where something can change (free-fall confirmations, impacts, stillness confirmations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from device.detect.common import (
    BoolArray,
    Detection,
    FloatArray,
    RunTracker,
    SampleHistory,
    angle_deg,
    check_imu_batch,
    window_mean,
)
from device.detect.pursuit import FootPursuitConfig, FootPursuitDetector
from device.validate import check_number


@dataclass(frozen=True, slots=True)
class FallConfig:
    """Thresholds of the officer-down detector (g, deg/s, seconds, degrees)."""

    rate_hz: float = 100.0
    freefall_g: float = 0.5
    freefall_min_s: float = 0.05
    impact_g: float = 2.0
    impact_dps: float = 250.0
    impact_window_s: float = 1.0
    settle_s: float = 2.0
    still_s: float = 2.0
    still_tol_g: float = 0.2
    still_dps: float = 30.0
    min_tilt_deg: float = 45.0
    reference_s: float = 1.0

    def __post_init__(self) -> None:
        owner = "fall"
        check_number(owner, "rate_hz", self.rate_hz, 10.0, 2000.0, integer=False)
        check_number(owner, "freefall_g", self.freefall_g, 0.05, 0.95, integer=False)
        check_number(owner, "freefall_min_s", self.freefall_min_s, 0.0, 2.0, integer=False)
        check_number(owner, "impact_g", self.impact_g, 1.1, 16.0, integer=False)
        check_number(owner, "impact_dps", self.impact_dps, 10.0, 2000.0, integer=False)
        check_number(owner, "impact_window_s", self.impact_window_s, 0.05, 5.0, integer=False)
        check_number(owner, "settle_s", self.settle_s, 0.0, 30.0, integer=False)
        check_number(owner, "still_s", self.still_s, 0.2, 30.0, integer=False)
        check_number(owner, "still_tol_g", self.still_tol_g, 0.01, 0.9, integer=False)
        check_number(owner, "still_dps", self.still_dps, 1.0, 500.0, integer=False)
        check_number(owner, "min_tilt_deg", self.min_tilt_deg, 0.0, 180.0, integer=False)
        check_number(owner, "reference_s", self.reference_s, 0.05, 10.0, integer=False)


class _Phase(Enum):
    IDLE = "idle"
    FREEFALL = "freefall"  # free fall confirmed, waiting for an impact
    IMPACT = "impact"  # impact seen, waiting for stillness


class _Batch(NamedTuple):
    t: FloatArray
    amag: FloatArray
    gmag: FloatArray
    accel: FloatArray  # history + batch, for windowed means
    offset: int  # index in ``accel`` of the batch's first sample
    ff_edge: BoolArray
    impact: BoolArray
    still_start: FloatArray
    still_edge: BoolArray


class FallDetector:
    """Streaming officer-down detector. ``feed`` batches; the same samples give the same result."""

    def __init__(self, config: FallConfig | None = None) -> None:
        self.config = config or FallConfig()
        c = self.config
        self._ref_n = max(1, round(c.reference_s * c.rate_hz))
        self._still_n = max(1, round(c.still_s * c.rate_hz))
        self._ff_n = max(1, round(c.freefall_min_s * c.rate_hz) + 1)
        self._history = SampleHistory(max(self._ref_n, self._still_n, self._ff_n), 3)
        self._freefall = RunTracker()
        self._still = RunTracker()
        self._last_t = -math.inf
        self._phase = _Phase.IDLE
        self._t_ff = math.nan
        self._t_impact = math.nan
        self._reference: FloatArray = np.zeros(3)
        self._ff_min_g = math.nan
        self._peak_g = 0.0
        self._peak_dps = 0.0

    def feed(self, t: npt.ArrayLike, accel: npt.ArrayLike, gyro: npt.ArrayLike) -> list[Detection]:
        """Process a batch of samples; return the falls confirmed in it (usually none)."""
        tt, aa, gg = check_imu_batch(t, accel, gyro, self._last_t)
        if tt.shape[0] == 0:
            return []
        self._last_t = float(tt[-1])
        return self._scan(self._features(tt, aa, gg))

    def _features(self, t: FloatArray, accel: FloatArray, gyro: FloatArray) -> _Batch:
        c = self.config
        amag = np.linalg.norm(accel, axis=1)
        gmag = np.linalg.norm(gyro, axis=1)
        joined, offset = self._history.extend(accel)
        _, ff_edge = self._freefall.update(amag < c.freefall_g, t, c.freefall_min_s)
        still = (np.abs(amag - 1.0) < c.still_tol_g) & (gmag < c.still_dps)
        still_start, still_edge = self._still.update(still, t, c.still_s)
        impact = (amag > c.impact_g) | (gmag > c.impact_dps)
        return _Batch(t, amag, gmag, joined, offset, ff_edge, impact, still_start, still_edge)

    def _scan(self, b: _Batch) -> list[Detection]:
        found: list[Detection] = []
        for i in np.flatnonzero(b.ff_edge | b.impact | b.still_edge).tolist():
            if b.ff_edge[i]:
                self._on_freefall(b, i)
            if b.impact[i]:
                self._on_impact(b, i)
            if b.still_edge[i]:
                detection = self._on_still(b, i)
                if detection is not None:
                    found.append(detection)
        return found

    def _on_freefall(self, b: _Batch, i: int) -> None:
        c = self.config
        now = float(b.t[i])
        if self._phase is _Phase.FREEFALL and now - self._t_ff <= c.impact_window_s:
            self._t_ff = now  # a longer or repeated free fall: keep the pre-fall reference
            return
        if self._phase is _Phase.IMPACT and now - self._t_impact <= c.settle_s:
            return  # still tumbling: the next impact re-arms the wait for stillness
        k = b.offset + i
        self._phase = _Phase.FREEFALL
        self._t_ff = now
        # Gravity direction over the last second: the posture before the fall (the few free-fall
        # samples in the window are near zero and barely move the mean).
        self._reference = window_mean(b.accel, k, self._ref_n)
        recent = b.accel[max(0, k - self._ff_n + 1) : k + 1]
        self._ff_min_g = float(np.linalg.norm(recent, axis=1).min())
        self._peak_g = 0.0
        self._peak_dps = 0.0

    def _on_impact(self, b: _Batch, i: int) -> None:
        now = float(b.t[i])
        if self._phase is _Phase.FREEFALL and now - self._t_ff > self.config.impact_window_s:
            self._phase = _Phase.IDLE  # the free fall ended softly: not a fall
        if self._phase is _Phase.IDLE:
            return
        self._phase = _Phase.IMPACT
        self._t_impact = now
        self._peak_g = max(self._peak_g, float(b.amag[i]))
        self._peak_dps = max(self._peak_dps, float(b.gmag[i]))

    def _on_still(self, b: _Batch, i: int) -> Detection | None:
        c = self.config
        if self._phase is not _Phase.IMPACT:
            return None
        self._phase = _Phase.IDLE
        started = float(b.still_start[i])
        if started - self._t_impact > c.settle_s:
            return None  # moved about too long after the impact before lying still
        posture = window_mean(b.accel, b.offset + i, self._still_n)
        tilt = angle_deg(self._reference, posture)
        if tilt < c.min_tilt_deg:
            return None  # still, but as upright as before: a jump, a hard sit, a stop
        features = {
            "freefall_min_g": self._ff_min_g,
            "peak_g": self._peak_g,
            "peak_dps": self._peak_dps,
            "impact_at_s": self._t_impact,
            "still_s": float(b.t[i]) - started,
            "tilt_deg": tilt,
        }
        return Detection("officer_down", float(b.t[i]), active=True, features=features)


class ImuDetectors:
    """The fall and foot-pursuit detectors fed the same IMU stream; detections in time order."""

    def __init__(
        self, fall: FallConfig | None = None, pursuit: FootPursuitConfig | None = None
    ) -> None:
        self.fall = FallDetector(fall)
        self.pursuit = FootPursuitDetector(pursuit)

    def feed(self, t: npt.ArrayLike, accel: npt.ArrayLike, gyro: npt.ArrayLike) -> list[Detection]:
        """Feed both detectors; return their detections sorted by time (falls first on ties)."""
        tt, aa, gg = check_imu_batch(t, accel, gyro, -math.inf)
        found = self.fall.feed(tt, aa, gg) + self.pursuit.feed(tt, aa, gg)
        return sorted(found, key=lambda d: d.at_s)
