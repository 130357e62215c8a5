"""The one action an MQTT-speaking sans-IO core returns: publish these bytes on this topic.

Cores (the device's upload manager, the evidence receiver) decide what to send; their asyncio
shells publish it. QoS 1 by default: every protocol message must survive a reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` on ``topic`` with ``qos``; ``retain`` for state (status) messages."""

    topic: str
    payload: bytes
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
