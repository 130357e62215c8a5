"""The device's MQTT link: URL-parsed settings, a reconnecting persistent session, typed errors.

``parse_broker_url`` -> ``BrokerSettings``; ``MqttLink(settings, client_id=..., presence=...,
rng=...)`` run in a ``TaskGroup``; errors under ``MqttLinkError`` (a ``DeviceError``).
"""

from __future__ import annotations

from device.mqtt.client import publish_packet_size
from device.mqtt.errors import (
    ConnectFailed,
    LinkDown,
    MqttLinkError,
    PublishInterrupted,
    PublishRejected,
    PublishTimeout,
    PublishUncertain,
)
from device.mqtt.link import LinkMessage, MqttLink, OnConnected, Presence
from device.mqtt.settings import Backoff, BrokerSettings, parse_broker_url

__all__ = [
    "Backoff",
    "BrokerSettings",
    "ConnectFailed",
    "LinkDown",
    "LinkMessage",
    "MqttLink",
    "MqttLinkError",
    "OnConnected",
    "Presence",
    "PublishInterrupted",
    "PublishRejected",
    "PublishTimeout",
    "PublishUncertain",
    "parse_broker_url",
    "publish_packet_size",
]
