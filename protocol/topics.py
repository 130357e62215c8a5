"""The versioned MQTT topic namespace.

Every topic lives under ``{prefix}/v1/``: per device ``{prefix}/v1/dev/{device}/{channel}``, per
group ``{prefix}/v1/group/{group}/{channel}``. The prefix is ``bwc`` unless an operator needs
several tenants on one broker (``agency-a/bwc``). ``Topics.parse`` turns a concrete topic back into
a typed value and rejects anything malformed, including wildcards and ``$`` topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from protocol.errors import DecodeError, LocalProtocolError
from protocol.ids import check_id, is_safe_id

TOPIC_VERSION: Final = "v1"
DEFAULT_PREFIX: Final = "bwc"
MAX_TOPIC_BYTES: Final = 512


class DeviceChannel(StrEnum):
    """Topics under one device. Direction: D = device publishes, R = receiver, C = controller."""

    STATUS = "status"  # D, retained; the Last Will is the offline status
    TELEMETRY = "telemetry"  # D
    EVENT = "event"  # D
    COMMAND = "cmd"  # C -> device
    REPLY = "reply"  # D, replies to commands
    UPLOAD_OFFER = "upload/offer"  # D
    UPLOAD_CHUNK = "upload/chunk"  # D, binary
    UPLOAD_ACK = "upload/ack"  # R -> device
    AUDIT = "audit"  # D, binary: a range of the device's audit.log (protocol.auditship)
    AUDIT_ACK = "audit/ack"  # R -> device


class GroupChannel(StrEnum):
    """Topics under one group of cameras (a squad, a vehicle, an incident)."""

    PEER = "peer"  # any member: peer activation broadcasts
    COMMAND = "cmd"  # C -> every member


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """A parsed per-device topic."""

    device: str
    channel: DeviceChannel


@dataclass(frozen=True, slots=True)
class GroupTopic:
    """A parsed per-group topic."""

    group: str
    channel: GroupChannel


_DEVICE_CHANNELS: Final = {channel.value: channel for channel in DeviceChannel}
_GROUP_CHANNELS: Final = {channel.value: channel for channel in GroupChannel}


class Topics:
    """Builds and parses the topics of one namespace."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        levels = prefix.split("/")
        for level in levels:
            check_id(level, "topic prefix level")
        self.prefix = prefix
        self._root = f"{prefix}/{TOPIC_VERSION}"
        self._root_levels = len(levels) + 1

    def device(self, device_id: str, channel: DeviceChannel) -> str:
        """The concrete topic of ``channel`` for one device."""
        return f"{self._root}/dev/{check_id(device_id, 'device ID')}/{channel.value}"

    def group(self, group_id: str, channel: GroupChannel) -> str:
        """The concrete topic of ``channel`` for one group."""
        return f"{self._root}/group/{check_id(group_id, 'group ID')}/{channel.value}"

    def device_filter(self, channel: DeviceChannel, device_id: str | None = None) -> str:
        """A subscription filter for ``channel`` of one device, or of every device (``+``)."""
        who = "+" if device_id is None else check_id(device_id, "device ID")
        return f"{self._root}/dev/{who}/{channel.value}"

    def group_filter(self, channel: GroupChannel, group_id: str | None = None) -> str:
        """A subscription filter for ``channel`` of one group, or of every group (``+``)."""
        who = "+" if group_id is None else check_id(group_id, "group ID")
        return f"{self._root}/group/{who}/{channel.value}"

    def parse(self, topic: str) -> DeviceTopic | GroupTopic:
        """Parse a concrete topic of this namespace; raises ``DecodeError`` if it is not one."""
        if not topic or len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
            raise DecodeError(f"topic must be 1-{MAX_TOPIC_BYTES} bytes", where="topic")
        if any(char in topic for char in "+#$\x00"):
            raise DecodeError(
                f"topic {topic!r} contains a wildcard, '$' or NUL; a concrete topic is required",
                where="topic",
            )
        levels = topic.split("/")
        root = "/".join(levels[: self._root_levels])
        if root != self._root:
            raise DecodeError(f"topic {topic!r} is not under {self._root!r}", where="topic")
        return self._parse_tail(topic, levels[self._root_levels :])

    def _parse_tail(self, topic: str, tail: list[str]) -> DeviceTopic | GroupTopic:
        if len(tail) < 3:
            raise DecodeError(f"topic {topic!r} is too short", where="topic")
        scope, owner, channel_name = tail[0], tail[1], "/".join(tail[2:])
        if not is_safe_id(owner):
            raise DecodeError(f"topic {topic!r} has an invalid ID {owner!r}", where="topic")
        if scope == "dev" and channel_name in _DEVICE_CHANNELS:
            return DeviceTopic(owner, _DEVICE_CHANNELS[channel_name])
        if scope == "group" and channel_name in _GROUP_CHANNELS:
            return GroupTopic(owner, _GROUP_CHANNELS[channel_name])
        raise DecodeError(
            f"topic {topic!r} has an unknown scope {scope!r} or channel {channel_name!r}",
            where="topic",
        )


def require_concrete(topic: str) -> str:
    """Return ``topic`` if a message may be published to it; raise ``LocalProtocolError`` if not."""
    if not topic or any(char in topic for char in "+#\x00") or topic.startswith("$"):
        raise LocalProtocolError(f"cannot publish to {topic!r}: not a concrete topic")
    return topic
