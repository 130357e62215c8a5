"""The IMU detectors: falls found once and on time, activities ignored, streaming invariance."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from device.detect import Detection, FallConfig, FallDetector, FootPursuitConfig, ImuDetectors
from device.detect.pursuit import FootPursuitDetector
from device.errors import ConfigError
from sim.sensors import episodes
from sim.sensors.imu import ImuEpisode


def _run(ep: ImuEpisode) -> list[Detection]:
    return ImuDetectors().feed(ep.t, ep.accel, ep.gyro)


def _split_feed(ep: ImuEpisode, cuts: list[int]) -> list[Detection]:
    detectors = ImuDetectors()
    bounds = [0, *sorted(set(cuts)), ep.t.shape[0]]
    found: list[Detection] = []
    for lo, hi in itertools.pairwise(bounds):
        found += detectors.feed(ep.t[lo:hi], ep.accel[lo:hi], ep.gyro[lo:hi])
    return found


@pytest.mark.parametrize("seed", range(6))
def test_a_fall_is_detected_once_after_the_stillness(seed: int) -> None:
    ep = episodes.fall(seed)
    downs = [d for d in _run(ep) if d.kind == "officer_down"]
    assert len(downs) == 1
    impact = ep.events["fall_impact"]
    # 2 s of stillness after an impact and a settle of at most 1.3 s.
    assert impact + 2.0 <= downs[0].at_s <= impact + 4.0
    assert downs[0].features["tilt_deg"] >= 45.0
    assert downs[0].features["peak_g"] > 2.0 or downs[0].features["peak_dps"] > 250.0


@pytest.mark.parametrize(
    "make",
    [
        episodes.standing,
        episodes.walking,
        episodes.jump,
        episodes.sit_hard,
        episodes.stumble,
        episodes.vehicle_entry,
    ],
)
@pytest.mark.parametrize("seed", range(4))
def test_activities_and_hard_negatives_trigger_nothing(make: episodes.Generate, seed: int) -> None:
    assert _run(make(seed)) == []


@pytest.mark.parametrize("seed", range(4))
def test_running_starts_and_ends_a_pursuit(seed: int) -> None:
    ep = episodes.running(seed)
    found = [(d.kind, d.active) for d in _run(ep)]
    assert found == [("foot_pursuit", True), ("foot_pursuit", False)]
    start, stop = (d.at_s for d in _run(ep))
    assert ep.events["run_start"] + 3.0 <= start <= ep.events["run_start"] + 6.0
    assert ep.events["run_stop"] + 3.0 <= stop <= ep.events["run_stop"] + 7.0


def test_a_fall_alone_through_the_fall_detector() -> None:
    ep = episodes.fall(3)
    detector = FallDetector()
    assert [d.kind for d in detector.feed(ep.t, ep.accel, ep.gyro)] == ["officer_down"]


def test_lying_still_without_tilt_requirement_is_configurable() -> None:
    ep = episodes.jump(1)
    assert FallDetector().feed(ep.t, ep.accel, ep.gyro) == []
    lax = FallDetector(FallConfig(min_tilt_deg=0.0))
    assert [d.kind for d in lax.feed(ep.t, ep.accel, ep.gyro)] == ["officer_down"]


@settings(max_examples=25)
@given(
    kind=st.sampled_from(["fall", "running"]),
    seed=st.integers(0, 3),
    cuts=st.lists(st.integers(1, 1500), max_size=12),
)
@example(kind="running", seed=3, cuts=[525, 550])  # once differed in the last bit (batched FFT)
def test_any_split_gives_the_same_detections(kind: str, seed: int, cuts: list[int]) -> None:
    ep = episodes.EPISODES[kind](seed)
    assert _split_feed(ep, cuts) == _run(ep)


def test_sample_by_sample_feeding_matches_one_batch() -> None:
    ep = episodes.fall(0)
    assert _split_feed(ep, list(range(1, ep.t.shape[0]))) == _run(ep)


def test_timestamps_must_increase_across_feeds() -> None:
    ep = episodes.standing(0, seconds=1.0)
    detector = FallDetector()
    detector.feed(ep.t, ep.accel, ep.gyro)
    with pytest.raises(ValueError, match="strictly increasing"):
        detector.feed(ep.t, ep.accel, ep.gyro)
    with pytest.raises(ValueError, match=r"accel \(N,3\)"):
        FootPursuitDetector().feed(ep.t, ep.accel[:, :2], ep.gyro)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FallConfig(freefall_g=1.5), "fall.freefall_g"),
        (lambda: FallConfig(still_s=-1.0), "fall.still_s"),
        (lambda: FallConfig(impact_dps=True), "fall.impact_dps"),
        (lambda: FootPursuitConfig(min_cadence_hz=3.0, max_cadence_hz=2.0), "max_cadence_hz"),
        (lambda: FootPursuitConfig(hop_s=5.0), "foot_pursuit.hop_s"),
    ],
)
def test_configs_reject_bad_values(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_detection_records_are_validated_and_read_only() -> None:
    with pytest.raises(ValueError, match="instantaneous"):
        Detection("officer_down", 1.0, active=False)
    with pytest.raises(ValueError, match="kind"):
        Detection("sneeze", 1.0, active=True)
    d = Detection("foot_pursuit", 1.0, active=True, features={"x": 1.0})
    with pytest.raises(TypeError):
        d.features["x"] = 2.0  # type: ignore[index]
    assert np.isclose(d.features["x"], 1.0)
