"""Seeded GPS tracks: a walk or drive through waypoints, with jitter and spans without a fix.

Positions move at ``speed_mps`` along the straight legs between ``waypoints`` ((lat, lon) in
degrees), sampled every ``period_s``. Each fix gets jitter: a slowly wandering offset (a random
walk pulled back to zero, as multipath and satellite geometry change) plus white noise, both of
about ``jitter_m`` metres. Fixes inside ``loss`` spans ((start_s, end_s)) are lost: NaN rows in
``latlon`` and ``None`` from ``fixes()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6_371_008.8

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GpsTrack:
    """Times (N,) in seconds and positions (N,2) in degrees; NaN rows where the fix was lost."""

    t: FloatArray
    latlon: FloatArray

    def fixes(self) -> Iterator[tuple[float, tuple[float, float] | None]]:
        """``(t, (lat, lon))`` per sample, or ``(t, None)`` where the fix was lost."""
        for t, (lat, lon) in zip(self.t.tolist(), self.latlon.tolist(), strict=True):
            yield t, None if math.isnan(lat) else (lat, lon)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point ``north_m`` north and ``east_m`` east of (lat, lon), in degrees."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def gps_track(
    seed: int | np.random.Generator,
    waypoints: Sequence[tuple[float, float]],
    *,
    speed_mps: float = 1.4,
    period_s: float = 1.0,
    jitter_m: float = 3.0,
    loss: Sequence[tuple[float, float]] = (),
) -> GpsTrack:
    """A track through ``waypoints`` (at least two) at ``speed_mps``, one fix per ``period_s``."""
    if len(waypoints) < 2 or speed_mps <= 0 or period_s <= 0:
        raise ValueError("gps_track needs two waypoints and a positive speed and period")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ll = np.asarray(waypoints, dtype=np.float64)
    lat0 = float(ll[:, 0].mean())
    ky = math.radians(1.0) * EARTH_RADIUS_M
    kx = ky * math.cos(math.radians(lat0))
    xy = np.stack(((ll[:, 1] - ll[0, 1]) * kx, (ll[:, 0] - ll[0, 0]) * ky), axis=1)
    legs = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    along = np.concatenate(([0.0], np.cumsum(legs)))
    t = np.arange(0.0, along[-1] / speed_mps + period_s / 2, period_s)
    s = np.minimum(t * speed_mps, along[-1])
    x = np.interp(s, along, xy[:, 0])
    y = np.interp(s, along, xy[:, 1])
    n = t.shape[0]
    wander = np.zeros((n, 2))
    steps = rng.normal(0.0, jitter_m * 0.3, size=(n, 2))
    for i in range(1, n):  # AR(1): correlated over ~10 fixes
        wander[i] = 0.9 * wander[i - 1] + steps[i]
    x = x + wander[:, 0] + rng.normal(0.0, jitter_m * 0.5, n)
    y = y + wander[:, 1] + rng.normal(0.0, jitter_m * 0.5, n)
    latlon = np.stack((ll[0, 0] + y / ky, ll[0, 1] + x / kx), axis=1)
    for start, end in loss:
        latlon[(t >= start) & (t < end)] = math.nan
    return GpsTrack(t, latlon)
