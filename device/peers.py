"""Peer broadcasts from the camera's group: a nearby camera started or stopped recording.

The daemon hands each message on the group's ``peer`` topic to ``apply_peer_message``; the
camera's policy then decides (range, group master, enabled trigger), and the audit log records it.
"""

from __future__ import annotations

import math
from typing import Final

from device.camera import Camera
from device.triggers import TriggerEvent
from protocol.common import Trigger
from protocol.messages import PeerActivation, PeerDeactivation, decode_for_channel
from protocol.topics import GroupChannel

EARTH_RADIUS_M: Final = 6_371_000.0


def apply_peer_message(camera: Camera, payload: bytes, now: float) -> bool:
    """Apply one ``peer`` message; False if it is not one for this camera to act on.

    Raises ``protocol.errors.DecodeError`` for a malformed message.
    """
    message = decode_for_channel(GroupChannel.PEER, payload)
    if not isinstance(message, PeerActivation | PeerDeactivation):
        return False
    if message.device == camera.device_id:
        return False  # our own broadcast
    if isinstance(message, PeerActivation):
        camera.trigger(peer_trigger(message, camera.position), now)
    else:
        trigger = Trigger(kind="peer", source=f"peer:{message.device}")
        camera.deactivate(trigger, message.reason, now)
    return True


def peer_trigger(message: PeerActivation, here: tuple[float, float] | None) -> TriggerEvent:
    """The trigger a peer's activation broadcast is, for a camera at ``here``."""
    return TriggerEvent(
        kind="peer",
        source=f"peer:{message.device}",
        peer=message.device,
        group_master=message.master,
        distance_m=distance_m(here, message.position),
    )


def distance_m(here: tuple[float, float] | None, there: tuple[float, float] | None) -> float | None:
    """Great-circle distance between two positions, or None when either is unknown."""
    if here is None or there is None:
        return None
    lat1, lon1, lat2, lon2 = map(math.radians, (*here, *there))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))
