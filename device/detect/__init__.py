"""Trigger detectors computed from the camera's sensors: pure, streaming and sans-clock.

Each detector takes a frozen, validated config, is fed batches of samples with their sensor
timestamps, and returns ``Detection`` records. See docs/detectors.md for the algorithms, the
thresholds and the measured quality.
"""

from __future__ import annotations

from device.detect.acoustic import GunshotConfig, GunshotDetector
from device.detect.common import Detection
from device.detect.geofence import Geofence, GeofenceConfig, GeofenceTracker
from device.detect.imu import FallConfig, FallDetector, ImuDetectors
from device.detect.pursuit import FootPursuitConfig, FootPursuitDetector

__all__ = [
    "Detection",
    "FallConfig",
    "FallDetector",
    "FootPursuitConfig",
    "FootPursuitDetector",
    "Geofence",
    "GeofenceConfig",
    "GeofenceTracker",
    "GunshotConfig",
    "GunshotDetector",
    "ImuDetectors",
]
