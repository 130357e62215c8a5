"""JSON messages on the MQTT topics, and their strict codec.

Each topic channel carries one family: ``status`` a ``Status``, ``telemetry`` a ``Telemetry``,
``event`` an event (``protocol.events``), ``cmd`` a command and ``reply`` a ``Reply``
(``protocol.commands``), a group's ``peer`` a ``PeerActivation`` or ``PeerDeactivation``.
Decoding is strict: any malformed input raises ``DecodeError`` with the path of the field at
fault, never anything else.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

import msgspec

from protocol.commands import (
    Activate,
    AnyCommand,
    Command,
    CommandError,
    Deactivate,
    ErrorCode,
    Ping,
    Reply,
    SetConfig,
    SetMarker,
    SetMode,
)
from protocol.common import (
    DeviceMessage,
    Message,
    NonNegativeFloat,
    NonNegativeInt,
    Percent,
    Trigger,
)
from protocol.errors import DecodeError
from protocol.events import Activation, AnyEvent, Deactivation, Event, Fault, Marker, ModeChange
from protocol.ids import SafeId, UtcTime
from protocol.jsoncodec import MAX_JSON_MESSAGE_BYTES, decode_json, encode_checked
from protocol.topics import DeviceChannel, GroupChannel
from protocol.vocabulary import ClockSource, DeviceState, Label, Mode

T = TypeVar("T")


class Status(DeviceMessage, frozen=True, kw_only=True, tag="status"):
    """Online/offline presence, published retained.

    The device registers ``Status(online=False, reason="connection_lost")`` as its MQTT Last Will
    when it connects (``ts`` is then the connect time), publishes ``online=True`` right after, and
    ``online=False, reason="shutdown"`` before a clean disconnect.
    """

    online: bool
    reason: Literal["connected", "shutdown", "connection_lost"]
    boot_id: SafeId
    firmware: Label


class Battery(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Battery charge, and the estimated minutes left at the present draw."""

    percent: Percent
    charging: bool
    minutes_left: NonNegativeFloat | None = None


class Storage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Evidence storage use. ``full`` means no new recording can start."""

    used_bytes: NonNegativeInt
    capacity_bytes: NonNegativeInt
    segments: NonNegativeInt
    full: bool


class UploadQueue(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Segments waiting for upload, the one in flight, and verified totals since boot."""

    pending_segments: NonNegativeInt
    pending_bytes: NonNegativeInt
    current: SafeId | None = None
    current_committed_bytes: NonNegativeInt = 0
    current_size_bytes: NonNegativeInt = 0
    verified_segments: NonNegativeInt = 0
    verified_bytes: NonNegativeInt = 0


class Clock(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Whether the device's UTC clock is trustworthy, and where it was last set from."""

    set: bool
    source: ClockSource
    last_sync_utc: UtcTime | None = None


class Telemetry(DeviceMessage, frozen=True, kw_only=True, tag="telemetry"):
    """Periodic device state."""

    state: DeviceState
    modes: tuple[Mode, ...] = ()
    recording: SafeId | None = None
    battery: Battery
    storage: Storage
    upload: UploadQueue
    clock: Clock
    counters: dict[SafeId, NonNegativeInt] = msgspec.field(default_factory=dict)


class PeerActivation(DeviceMessage, frozen=True, kw_only=True, tag="peer_activation"):
    """A camera tells its group that it started recording, so peers in range can start too.

    ``position`` is ``[latitude, longitude]`` in degrees when known; receivers use it for the
    range check.
    """

    recording: SafeId
    trigger: Trigger
    master: bool
    position: (
        tuple[
            Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)],
            Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)],
        ]
        | None
    ) = None


class PeerDeactivation(DeviceMessage, frozen=True, kw_only=True, tag="peer_deactivation"):
    """The group master tells its group that it stopped: members stop their group recording.

    A member ignores it unless the sender is the master of the group recording it joined.
    """

    recording: SafeId
    reason: Label | None = None


AnyPeerMessage = PeerActivation | PeerDeactivation
AnyMessage = Status | Telemetry | AnyEvent | AnyCommand | Reply | PeerActivation | PeerDeactivation

_FAMILIES: Final[dict[DeviceChannel | GroupChannel, object]] = {
    DeviceChannel.STATUS: Status,
    DeviceChannel.TELEMETRY: Telemetry,
    DeviceChannel.EVENT: AnyEvent,
    DeviceChannel.COMMAND: AnyCommand,
    DeviceChannel.REPLY: Reply,
    GroupChannel.PEER: AnyPeerMessage,
    GroupChannel.COMMAND: AnyCommand,
}


def encode_message(message: Message) -> bytes:
    """Encode a message as compact JSON; ``LocalProtocolError`` if a field is out of range."""
    return encode_checked(message)


def decode_message(data: bytes | str, *, max_bytes: int = MAX_JSON_MESSAGE_BYTES) -> AnyMessage:
    """Decode any JSON message by its ``type``; raises ``DecodeError`` on anything malformed."""
    return _decode(data, AnyMessage, max_bytes)  # type: ignore[arg-type]


def decode_for_channel(
    channel: DeviceChannel | GroupChannel,
    data: bytes | str,
    *,
    max_bytes: int = MAX_JSON_MESSAGE_BYTES,
) -> AnyMessage:
    """Decode a payload received on ``channel``; only that channel's message family is accepted."""
    family = _FAMILIES.get(channel)
    if family is None:
        raise DecodeError(f"channel {channel.value!r} does not carry JSON messages")
    return _decode(data, family, max_bytes)  # type: ignore[arg-type]


def decode_command(data: bytes | str, *, max_bytes: int = MAX_JSON_MESSAGE_BYTES) -> AnyCommand:
    """Decode a command; ``DecodeError`` names the field, or says the command type is unknown."""
    return _decode(data, AnyCommand, max_bytes)  # type: ignore[arg-type]


def _decode(data: bytes | str, family: type[T], max_bytes: int) -> T:
    try:
        return decode_json(data, family, max_bytes=max_bytes)
    except DecodeError as exc:
        if exc.where == "$.type":
            raise DecodeError(
                f"unknown message type for this topic: {exc.reason}", where="$.type"
            ) from exc
        if exc.where == "$.v":
            raise DecodeError(
                f"unsupported schema version: {exc.reason}; this decoder speaks version 1",
                where="$.v",
            ) from exc
        raise


def correlation_id_of(data: bytes | str) -> str | None:
    """Best-effort read of a command's ``id`` from a payload that failed to decode.

    Lets the device address its ``malformed`` reply to the right request.
    """
    try:
        probe = msgspec.json.decode(data, type=_IdProbe)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return probe.id


class _IdProbe(msgspec.Struct):
    id: SafeId


__all__ = [
    "Activate",
    "Activation",
    "AnyCommand",
    "AnyEvent",
    "AnyMessage",
    "AnyPeerMessage",
    "Battery",
    "Clock",
    "Command",
    "CommandError",
    "Deactivate",
    "Deactivation",
    "DeviceMessage",
    "ErrorCode",
    "Event",
    "Fault",
    "Marker",
    "Message",
    "ModeChange",
    "PeerActivation",
    "PeerDeactivation",
    "Ping",
    "Reply",
    "SetConfig",
    "SetMarker",
    "SetMode",
    "Status",
    "Storage",
    "Telemetry",
    "Trigger",
    "UploadQueue",
    "correlation_id_of",
    "decode_command",
    "decode_for_channel",
    "decode_message",
    "encode_message",
]
