"""Typed messages of the serial bench link and their payload codec.

Every message is a frozen, slotted dataclass validated when constructed; each has one frame type
code (``MessageType``), a direction, and a default reliability. ``encode_message`` and
``decode_message`` convert between messages and frame payloads; ``decode_message`` raises only
``DecodeError``, saying which message and field were wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from protocol.errors import DecodeError
from protocol.serial._base import Direction, FieldError, MessageType, SerialMessage
from protocol.serial.control import Ack, Capability, Heartbeat, Hello, Nak, NakReason, Role
from protocol.serial.inputs import (
    MAX_IMU_SAMPLES,
    Battery,
    Button,
    ButtonEdge,
    GpsFix,
    GpsFixType,
    Holster,
    ImuBatch,
    ImuSample,
    Taser,
    TaserEvent,
    VehicleInput,
    VehicleInputKind,
    t_ms_delta,
)
from protocol.serial.outputs import MAX_DISPLAY_TEXT, DisplayText, Haptic, Led, LedPattern, Tone

AnyMessage = (
    Hello
    | Heartbeat
    | Ack
    | Nak
    | ButtonEdge
    | Holster
    | VehicleInput
    | Taser
    | ImuBatch
    | GpsFix
    | Battery
    | Led
    | Haptic
    | Tone
    | DisplayText
)
"""Every concrete message type, for exhaustive ``match`` statements."""

MESSAGE_CLASSES: Final[Mapping[MessageType, type[SerialMessage]]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Hello,
            Heartbeat,
            Ack,
            Nak,
            ButtonEdge,
            Holster,
            VehicleInput,
            Taser,
            ImuBatch,
            GpsFix,
            Battery,
            Led,
            Haptic,
            Tone,
            DisplayText,
        )
    }
)
"""The message class of each frame type code."""

LINK_MESSAGES: Final = (Hello, Heartbeat, Ack, Nak)
"""Messages owned by the link itself; applications do not send them."""


def encode_message(message: SerialMessage) -> bytes:
    """Return the frame payload of ``message`` (its type code is ``message.TYPE``)."""
    return message.pack()


def decode_message(type_code: int, payload: bytes) -> SerialMessage:
    """Decode the payload of a frame of type ``type_code``.

    Raises ``DecodeError`` for an unknown type code, a payload of the wrong length, a field out
    of range or not a valid enum value, or invalid UTF-8; the message names the message and the
    field, with what was expected and what was found.
    """
    try:
        cls = MESSAGE_CLASSES[MessageType(type_code)]
    except ValueError:
        raise DecodeError(f"unknown message type code 0x{type_code:02X}", where="type") from None
    return cls.unpack(payload)


def accepts(role: Role, message_type: type[SerialMessage]) -> bool:
    """Whether a side of ``role`` may receive ``message_type`` (inputs go to the host only)."""
    wanted = Direction.TO_HOST if role is Role.HOST else Direction.TO_MCU
    return message_type.DIRECTION in (wanted, Direction.BOTH)


__all__ = [
    "LINK_MESSAGES",
    "MAX_DISPLAY_TEXT",
    "MAX_IMU_SAMPLES",
    "MESSAGE_CLASSES",
    "Ack",
    "AnyMessage",
    "Battery",
    "Button",
    "ButtonEdge",
    "Capability",
    "Direction",
    "DisplayText",
    "FieldError",
    "GpsFix",
    "GpsFixType",
    "Haptic",
    "Heartbeat",
    "Hello",
    "Holster",
    "ImuBatch",
    "ImuSample",
    "Led",
    "LedPattern",
    "MessageType",
    "Nak",
    "NakReason",
    "Role",
    "SerialMessage",
    "Taser",
    "TaserEvent",
    "Tone",
    "VehicleInput",
    "VehicleInputKind",
    "accepts",
    "decode_message",
    "encode_message",
    "t_ms_delta",
]
