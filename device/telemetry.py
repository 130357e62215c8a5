"""The device's telemetry and presence messages, built from the camera's state. Sans-IO.

Telemetry goes out on an interval (the daemon decides when); presence is the retained ``status``
message: ``online`` after every connect, the ``connection_lost`` form registered as the MQTT Last
Will, and ``shutdown`` before a clean disconnect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from device.camera import Camera, CameraState
from protocol.ids import is_safe_id
from protocol.messages import Battery, Clock, Status, Storage, Telemetry, UploadQueue
from protocol.vocabulary import DeviceState, Mode

FIRMWARE: Final = "bwc-sim"

_STATES: Final[dict[CameraState, DeviceState]] = {
    CameraState.OFF: "off",
    CameraState.BUFFERING: "buffering",
    CameraState.RECORDING: "recording",
    CameraState.POST_EVENT: "post_event",
    CameraState.SLEEPING: "sleeping",
}


def telemetry(
    camera: Camera,
    now: float,
    *,
    upload: UploadQueue,
    segments: int,
    counters: dict[str, int] | None = None,
) -> Telemetry:
    """A telemetry message of ``camera`` at ``now``; ``segments``: closed segments on the device."""
    modes: list[Mode] = []
    if camera.state is CameraState.SLEEPING:
        modes.append("sleep")
    if camera.muted:
        modes.append("mute")
    if camera.indicator.stealth:
        modes.append("stealth")
    used = camera.store.used_bytes
    capacity = camera.policy.storage_bytes
    minutes = camera.battery.minutes_left()
    return Telemetry(
        ts=camera.clock.utc(now),
        device=camera.device_id,
        state=_STATES[camera.state],
        modes=tuple(modes),
        recording=None if camera.recording is None else camera.recording.recording_id,
        battery=Battery(
            percent=round(min(100.0, max(0.0, camera.battery.percent)), 3),
            charging=False,
            minutes_left=None if minutes is None else round(max(0.0, minutes), 1),
        ),
        storage=Storage(
            used_bytes=used,
            capacity_bytes=capacity,
            segments=segments,
            full=used + camera.policy.storage_reserve_bytes >= capacity,
        ),
        upload=upload,
        clock=Clock(set=camera.clock.is_set, source=camera.clock.source),
        counters=dict(counters or {}),
    )


def merge_counters(*groups: tuple[str, Mapping[str, int]]) -> dict[str, int]:
    """One telemetry ``counters`` map from ``(prefix, counters)`` groups.

    A counter ``name`` becomes ``prefix.name`` (an empty prefix keeps it as is), e.g. the serial
    backend's ``crc_errors`` becomes ``serial.crc_errors``. The protocol allows only IDs as
    names and integers >= 0 as values (docs/protocol.md); anything else is left out, so a
    backend's odd counter cannot make the telemetry message invalid.
    """
    merged: dict[str, int] = {}
    for prefix, counters in groups:
        for name, value in counters.items():
            key = f"{prefix}.{name}" if prefix else name
            if is_safe_id(key) and type(value) is int and value >= 0:
                merged[key] = value
    return merged


def status(
    camera: Camera,
    now: float,
    *,
    online: bool,
    reason: Literal["connected", "shutdown", "connection_lost"],
    boot_id: str,
) -> Status:
    """The retained presence message (also the Last Will, with ``connection_lost``)."""
    return Status(
        ts=camera.clock.utc(now),
        device=camera.device_id,
        online=online,
        reason=reason,
        boot_id=boot_id,
        firmware=FIRMWARE,
    )
