"""The sensor generators: deterministic for a seed, different across seeds, physically sane."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.sensors import CLIPS, EPISODES, gps_track
from sim.sensors.audio import FULL_SCALE_DB, RATE_HZ
from sim.sensors.gps import offset


@pytest.mark.parametrize("kind", sorted(EPISODES))
def test_imu_episodes_are_deterministic_per_seed(kind: str) -> None:
    a, b, c = EPISODES[kind](7), EPISODES[kind](7), EPISODES[kind](8)
    assert np.array_equal(a.accel, b.accel)
    assert np.array_equal(a.gyro, b.gyro)
    assert a.events == b.events
    assert a.accel.shape != c.accel.shape or not np.array_equal(a.accel, c.accel)


@pytest.mark.parametrize("kind", sorted(EPISODES))
def test_imu_episodes_have_sane_shapes_and_gravity(kind: str) -> None:
    ep = EPISODES[kind](3)
    n = ep.t.shape[0]
    assert ep.accel.shape == ep.gyro.shape == (n, 3)
    assert np.allclose(np.diff(ep.t), 0.01)
    # Averaged over the episode, the accelerometer reads about 1 g (gravity).
    assert 0.85 < float(np.linalg.norm(ep.accel, axis=1).mean()) < 1.2


def test_running_has_its_cadence_and_walking_is_gentler() -> None:
    run, walk = EPISODES["running"](5), EPISODES["walking"](5)
    lo, hi = (round(run.events[k] * 100) for k in ("run_start", "run_stop"))
    amag = np.linalg.norm(run.accel[lo:hi], axis=1)
    spectrum = np.abs(np.fft.rfft(amag - amag.mean()))
    cadence = np.fft.rfftfreq(amag.shape[0], 0.01)[int(np.argmax(spectrum))]
    assert 2.4 <= cadence <= 3.7
    walk_std = float(np.linalg.norm(walk.accel, axis=1).std())
    assert float(amag.std()) > 2 * walk_std


def test_a_fall_ends_lying_down() -> None:
    ep = EPISODES["fall"](2)
    before, after = ep.accel[:50].mean(axis=0), ep.accel[-100:].mean(axis=0)
    cos = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
    assert math.degrees(math.acos(cos)) > 50.0


@pytest.mark.parametrize("kind", sorted(CLIPS))
def test_audio_clips_are_deterministic_and_calibrated(kind: str) -> None:
    a, b = CLIPS[kind](11), CLIPS[kind](11)
    assert np.array_equal(a.pcm, b.pcm)
    assert a.pcm.dtype == np.float32
    assert float(np.abs(a.pcm).max()) <= 1.0
    if a.event_s is not None:
        i = round(a.event_s * RATE_HZ)
        level = a.params["level_db"]
        peak = FULL_SCALE_DB + 20 * math.log10(float(np.abs(a.pcm[i : i + 480]).max()))
        assert peak == pytest.approx(min(level, FULL_SCALE_DB), abs=8.0)


def test_gps_track_follows_the_route_with_jitter_and_loss() -> None:
    base = (51.5, -0.12)
    route = [base, offset(*base, 0, 140)]
    track = gps_track(1, route, speed_mps=1.4, jitter_m=3.0, loss=((20.0, 40.0),))
    assert track.t.shape[0] == 101
    lost = [t for t, fix in track.fixes() if fix is None]
    assert lost == [float(t) for t in range(20, 40)]
    east = (track.latlon[:, 1] - base[1]) * 111_195 * math.cos(math.radians(base[0]))
    truth = np.minimum(track.t * 1.4, 140.0)
    error = np.abs(east - truth)[~np.isnan(east)]
    assert 0.5 < float(error.mean()) < 8.0
    again = gps_track(1, route, speed_mps=1.4, jitter_m=3.0, loss=((20.0, 40.0),))
    assert np.array_equal(track.latlon, again.latlon, equal_nan=True)
