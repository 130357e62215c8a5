"""Geofences: polygon validation, entry and exit through GPS jitter, fix loss."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.detect import Detection, Geofence, GeofenceConfig, GeofenceTracker
from device.errors import ConfigError
from sim.sensors.gps import gps_track, offset

BASE = (38.8895, -77.0353)


def _square(name: str, half_m: float = 100.0) -> Geofence:
    corners = [(-half_m, -half_m), (-half_m, half_m), (half_m, half_m), (half_m, -half_m)]
    return Geofence(name, tuple(offset(*BASE, n, e) for n, e in corners))


def _feed(
    tracker: GeofenceTracker, fixes: Sequence[tuple[float, tuple[float, float] | None]]
) -> list[Detection]:
    found: list[Detection] = []
    for t, fix in fixes:
        found += tracker.update(t, fix)
    return found


@pytest.mark.parametrize("seed", range(10))
def test_walking_through_a_fence_enters_and_exits_once_despite_jitter(seed: int) -> None:
    route = [offset(*BASE, 0, -300), offset(*BASE, 0, 300)]
    track = gps_track(seed, route, speed_mps=1.4, jitter_m=3.0)
    found = _feed(GeofenceTracker((_square("station"),)), list(track.fixes()))
    assert [(d.name, d.active) for d in found] == [("station", True), ("station", False)]
    # Boundary at 200 m and 400 m along the route; entry/exit confirmed within a margin's walk.
    assert 200 / 1.4 < found[0].at_s < 200 / 1.4 + 20
    assert 400 / 1.4 < found[1].at_s < 400 / 1.4 + 20


@pytest.mark.parametrize("seed", range(10))
def test_walking_along_the_boundary_never_flaps(seed: int) -> None:
    route = [offset(*BASE, -100, -300), offset(*BASE, -100, 300)]  # on the southern edge
    track = gps_track(seed, route, speed_mps=1.4, jitter_m=2.0)
    assert _feed(GeofenceTracker((_square("station"),)), list(track.fixes())) == []


def test_fix_loss_changes_nothing_and_invents_nothing() -> None:
    tracker = GeofenceTracker((_square("yard"),), GeofenceConfig(fix_timeout_s=10.0))
    inside, outside = offset(*BASE, 0, 0), offset(*BASE, 0, 500)
    assert [d.active for d in _feed(tracker, [(0.0, inside), (1.0, inside)])] == [True]
    assert _feed(tracker, [(float(t), None) for t in range(2, 600)]) == []
    assert tracker.inside("yard") is True
    # A streak interrupted by a long loss does not count: two fresh fixes are needed.
    assert _feed(tracker, [(600.0, outside)]) == []
    assert _feed(tracker, [(700.0, outside)]) == []
    assert [d.active for d in tracker.update(701.0, outside)] == [False]


def test_starting_outside_is_not_an_event_and_a_single_outlier_is_ignored() -> None:
    tracker = GeofenceTracker((_square("yard"),))
    outside, inside = offset(*BASE, 0, 500), offset(*BASE, 0, 0)
    fixes = [(0.0, outside), (1.0, outside), (2.0, inside), (3.0, outside), (4.0, outside)]
    assert _feed(tracker, fixes) == []
    assert tracker.inside("yard") is False


def test_entry_records_depth_and_position() -> None:
    tracker = GeofenceTracker((_square("a"), _square("b", 50.0)))
    found = _feed(tracker, [(0.0, BASE), (1.0, BASE)])
    assert sorted(d.name for d in found) == ["a", "b"]
    depth = {d.name: d.features["depth_m"] for d in found}
    assert depth["a"] == pytest.approx(100.0, abs=0.5)
    assert depth["b"] == pytest.approx(50.0, abs=0.5)


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        (((0.0, 0.0), (0.0, 1.0)), "at least 3"),
        (((0.0, 0.0), (0.0, 1.0), (91.0, 0.0)), r"polygon\[2\].lat"),
        (((0.0, 0.0), (0.0, 1.0), (1.0, 181.0)), r"polygon\[2\].lon"),
        (((0.0, 0.0), (0.0, 1.0), (0.0, 2.0)), "no area"),
        (((0.0, -179.0), (1.0, 179.0), (1.0, -179.5)), "180th meridian"),
        (((0.0, 0.0), (0.0, 1.0), (1.0,)), "vertex 2"),
    ],
)
def test_polygons_are_validated(polygon: tuple[tuple[float, ...], ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Geofence("bad", polygon)  # type: ignore[arg-type]


def test_names_and_config_are_validated() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        _square("")
    with pytest.raises(ConfigError, match="unique"):
        GeofenceTracker((_square("x"), _square("x")))
    with pytest.raises(ConfigError, match=r"geofence\.confirm_fixes"):
        GeofenceConfig(confirm_fixes=0)
    tracker = GeofenceTracker((_square("x"),))
    tracker.update(5.0, None)
    with pytest.raises(ValueError, match="before"):
        tracker.update(4.0, None)


@given(north=st.floats(-400, 400), east=st.floats(-400, 400))
def test_signed_distance_agrees_with_the_square(north: float, east: float) -> None:
    tracker = GeofenceTracker((_square("sq"),), GeofenceConfig(margin_m=0.0, confirm_fixes=1))
    found = tracker.update(0.0, offset(*BASE, north, east))
    inside = max(abs(north), abs(east)) < 100.0
    assert tracker.inside("sq") is inside
    assert [d.active for d in found] == ([True] if inside else [])
