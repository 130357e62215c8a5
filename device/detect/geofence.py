"""Geofence entry and exit from GPS fixes, with hysteresis so boundary jitter does not flap.

Each fence is a polygon of (lat, lon) vertices in degrees. Fixes are projected onto a local
equirectangular plane centred on the fence (x = R * dlon * cos(lat0), y = R * dlat, metres), which
is accurate to well under a metre over the few kilometres a fence spans. Inside/outside is ray
casting; the signed distance to the boundary (positive inside) is the distance to the nearest
edge.

Hysteresis is a margin in metres (a Schmitt trigger on the signed distance): a fix counts as
"inside" only at least ``margin_m`` inside the boundary and as "outside" only at least
``margin_m`` outside it; fixes in the band between count for neither side and break a streak.
The state changes after ``confirm_fixes`` consecutive fixes on the new side, so one multipath
outlier cannot make an entry either. A lost fix (``None``) changes nothing; after
``fix_timeout_s`` without a fix a partial streak is forgotten, and nothing is invented: the
state stays what it was until fixes confirm otherwise. The first confirmed side sets the initial
state, and reports an entry if it is inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device.detect.common import Detection, FloatArray
from device.errors import ConfigError
from device.validate import check_number

EARTH_RADIUS_M = 6_371_008.8  # mean radius: the projection's scale


@dataclass(frozen=True, slots=True)
class Geofence:
    """A named polygon of at least three (lat, lon) vertices in degrees, not crossing 180 deg."""

    name: str
    polygon: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"geofence.name must be a non-empty string, got {self.name!r}")
        owner = f"geofence {self.name!r}"
        if not isinstance(self.polygon, tuple) or len(self.polygon) < 3:
            raise ConfigError(f"{owner}: polygon needs at least 3 (lat, lon) vertices")
        for k, vertex in enumerate(self.polygon):
            if not isinstance(vertex, tuple) or len(vertex) != 2:
                raise ConfigError(f"{owner}: vertex {k} must be a (lat, lon) pair, got {vertex!r}")
            check_number(owner, f"polygon[{k}].lat", vertex[0], -90.0, 90.0, integer=False)
            check_number(owner, f"polygon[{k}].lon", vertex[1], -180.0, 180.0, integer=False)
        lons = [v[1] for v in self.polygon]
        if max(lons) - min(lons) > 180.0:
            raise ConfigError(f"{owner}: polygons crossing the 180th meridian are not supported")
        if abs(_shoelace(_Plane(self).vertices)) < 1.0:
            raise ConfigError(f"{owner}: polygon encloses no area (under 1 m^2); check vertices")


@dataclass(frozen=True, slots=True)
class GeofenceConfig:
    """Hysteresis of the tracker: margin in metres, fixes to confirm, seconds without a fix."""

    margin_m: float = 12.0
    confirm_fixes: int = 2
    fix_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_number("geofence", "margin_m", self.margin_m, 0.0, 1000.0, integer=False)
        check_number("geofence", "confirm_fixes", self.confirm_fixes, 1, 100, integer=True)
        check_number("geofence", "fix_timeout_s", self.fix_timeout_s, 0.0, 86400.0, integer=False)


def _shoelace(xy: FloatArray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


class _Plane:
    """A fence's local equirectangular projection and its edges in metres.

    Edges are plain tuples and the per-fix maths plain Python: fences have a handful of
    vertices, where numpy's per-call overhead costs more than the arithmetic.
    """

    def __init__(self, fence: Geofence) -> None:
        ll = np.array(fence.polygon, dtype=np.float64)
        self.lat0 = float(ll[:, 0].mean())
        self.lon0 = float(ll[:, 1].mean())
        self.kx = math.radians(1.0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))
        self.ky = math.radians(1.0) * EARTH_RADIUS_M
        xy = [self.project(lat, lon) for lat, lon in fence.polygon]
        self.vertices: FloatArray = np.array(xy, dtype=np.float64)
        self.edges = [(*xy[k], *xy[(k + 1) % len(xy)]) for k in range(len(xy))]

    def project(self, lat: float, lon: float) -> tuple[float, float]:
        """Metres east and north of the fence's centre."""
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky

    def signed_distance(self, lat: float, lon: float) -> float:
        """Metres to the boundary: positive inside, negative outside (ray casting for the sign)."""
        px, py = self.project(lat, lon)
        best = math.inf
        inside = False
        for ax, ay, bx, by in self.edges:
            dx, dy = bx - ax, by - ay
            seg = dx * dx + dy * dy
            s = 0.0 if seg == 0.0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / seg))
            best = min(best, math.hypot(ax + s * dx - px, ay + s * dy - py))
            if (ay > py) != (by > py) and px < ax + (py - ay) * dx / dy:
                inside = not inside
        return best if inside else -best


@dataclass(slots=True)
class _FenceState:
    plane: _Plane
    inside: bool | None = None  # None until the first confirmed side
    streak_side: bool | None = None
    streak: int = 0


class GeofenceTracker:
    """Tracks which fences the camera is in; ``update`` per fix returns entries and exits."""

    def __init__(self, fences: tuple[Geofence, ...], config: GeofenceConfig | None = None) -> None:
        names = [f.name for f in fences]
        if len(set(names)) != len(names):
            raise ConfigError(f"geofence names must be unique, got {names}")
        self.config = config or GeofenceConfig()
        self._fences = {f.name: _FenceState(_Plane(f)) for f in fences}
        self._last_t = -math.inf
        self._last_fix_t = -math.inf

    def inside(self, name: str) -> bool | None:
        """Whether the camera is in fence ``name`` (None: no confirmed fix yet)."""
        return self._fences[name].inside

    def update(self, t: float, fix: tuple[float, float] | None) -> list[Detection]:
        """Feed one fix (``(lat, lon)`` in degrees, or None when the fix is lost) at time ``t``.

        Raises ``ValueError`` if ``t`` goes backwards or the fix is not a valid position.
        """
        if not t >= self._last_t:
            raise ValueError(f"geofence update at t={t} is before the previous one")
        self._last_t = t
        if t - self._last_fix_t > self.config.fix_timeout_s:
            for state in self._fences.values():  # too old to continue a streak with
                state.streak_side, state.streak = None, 0
        if fix is None:
            return []
        lat, lon = float(fix[0]), float(fix[1])
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"GPS fix out of range: {fix!r}")
        self._last_fix_t = t
        found: list[Detection] = []
        for name, state in self._fences.items():
            detection = self._step(name, state, t, lat, lon)
            if detection is not None:
                found.append(detection)
        return found

    def _step(
        self, name: str, state: _FenceState, t: float, lat: float, lon: float
    ) -> Detection | None:
        depth = state.plane.signed_distance(lat, lon)
        margin = self.config.margin_m
        side = True if depth >= margin else False if depth <= -margin else None
        if side is None or side == state.inside:
            state.streak_side, state.streak = None, 0
            return None
        state.streak = state.streak + 1 if state.streak_side == side else 1
        state.streak_side = side
        if state.streak < self.config.confirm_fixes:
            return None
        first = state.inside is None
        state.inside, state.streak_side, state.streak = side, None, 0
        if first and not side:
            return None  # starting outside a fence is not an event
        features = {"depth_m": depth, "lat": lat, "lon": lon}
        return Detection("geofence", t, active=side, name=name, features=features)
