"""Seeded sensor generators for the trigger detectors: IMU episodes, audio clips, GPS tracks.

Deterministic for a seed (numpy ``default_rng``) and vectorized, so the quality script can run
thousands of episodes in seconds. See docs/detectors.md for the models and their ranges.
"""

from __future__ import annotations

from sim.sensors.audio import CLIPS, AudioClip, ambient, door_slam, gunshot
from sim.sensors.episodes import (
    EPISODES,
    fall,
    jump,
    running,
    sit_hard,
    standing,
    stumble,
    vehicle_entry,
    walking,
)
from sim.sensors.gps import GpsTrack, gps_track
from sim.sensors.imu import ImuEpisode

__all__ = [
    "CLIPS",
    "EPISODES",
    "AudioClip",
    "GpsTrack",
    "ImuEpisode",
    "ambient",
    "door_slam",
    "fall",
    "gps_track",
    "gunshot",
    "jump",
    "running",
    "sit_hard",
    "standing",
    "stumble",
    "vehicle_entry",
    "walking",
]
