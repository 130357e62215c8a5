"""Link-control messages: the handshake, liveness, and acknowledgements.

They are produced and consumed by ``SerialLink`` itself; applications never send them. None is
sent reliably: Hello is repeated by the handshake, Heartbeat by its timer, and acknowledging an
Ack would never end.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, Self

from protocol.serial._base import (
    Direction,
    MessageType,
    SerialMessage,
    check_enum,
    check_text,
    check_uint,
    decode_enum,
    decode_text,
    expect_length,
)

MAX_FIRMWARE_TEXT: Final = 32
"""Longest ``Hello.firmware``, in UTF-8 bytes."""


class Role(enum.IntEnum):
    """Which end of the bench link a side is."""

    HOST = 1
    MCU = 2


class Capability(enum.IntFlag):
    """What a side can produce or consume, announced in its Hello; bits 11-31 are reserved."""

    BUTTONS = 1 << 0
    HOLSTER = 1 << 1
    VEHICLE = 1 << 2
    TASER = 1 << 3
    IMU = 1 << 4
    GPS = 1 << 5
    BATTERY = 1 << 6
    LEDS = 1 << 7
    HAPTIC = 1 << 8
    TONE = 1 << 9
    DISPLAY = 1 << 10


class NakReason(enum.IntEnum):
    """Why a receiver refused a frame."""

    CRC = 1
    """Reserved: the seq of a corrupt frame cannot be trusted, so this stack never sends it."""
    UNKNOWN_TYPE = 2
    """The type code is unknown, or not one this side accepts from the peer's role."""
    BAD_PAYLOAD = 3
    """The payload did not decode: wrong length or a field out of range."""
    BUSY = 4
    """The receiver cannot take the frame now; the sender retries on its ack timer."""


@dataclass(frozen=True, slots=True)
class Hello(SerialMessage):
    """Introduces a side: its protocol version, role, capabilities, boot and firmware.

    ``boot_id`` is a random non-zero value chosen at every boot, so the peer can tell a reboot
    from a glitch. ``peer_boot_id`` names the peer boot this Hello answers, or is 0 in the
    periodic Hellos of a side that is still handshaking. A side is connected once it receives a
    Hello naming its own boot; it answers every Hello that does not name it, and one that does
    only on its way into the connected state, so Hellos never bounce forever.
    """

    TYPE = MessageType.HELLO
    RELIABLE = False
    DIRECTION = Direction.BOTH
    LAYOUT = struct.Struct(">BBIII")

    protocol_version: int
    role: Role
    capabilities: Capability
    boot_id: int
    firmware: str = ""
    peer_boot_id: int = 0

    def __post_init__(self) -> None:
        check_uint(self, "protocol_version", 8, low=1)
        check_enum(self, "role", Role)
        check_enum(self, "capabilities", Capability)
        check_uint(self, "capabilities", 32)
        check_uint(self, "boot_id", 32, low=1)
        check_uint(self, "peer_boot_id", 32)
        check_text(self, "firmware", MAX_FIRMWARE_TEXT)

    def pack(self) -> bytes:
        """Return the payload: the fixed fields, then the firmware string's UTF-8 bytes."""
        fixed = self.LAYOUT.pack(
            self.protocol_version, self.role, self.capabilities, self.boot_id, self.peer_boot_id
        )
        return fixed + self.firmware.encode("utf-8")

    @classmethod
    def _unpack(cls, payload: bytes) -> Self:
        fixed = cls.LAYOUT.size
        expect_length(cls, payload, fixed, fixed + MAX_FIRMWARE_TEXT)
        version, role, capabilities, boot_id, peer_boot_id = cls.LAYOUT.unpack(payload[:fixed])
        return cls(
            protocol_version=version,
            role=decode_enum(cls, "role", Role, role),
            # Unknown capability bits are kept: a newer peer may announce more than we know.
            capabilities=Capability(capabilities),
            boot_id=boot_id,
            firmware=decode_text(cls, "firmware", payload[fixed:]),
            peer_boot_id=peer_boot_id,
        )


@dataclass(frozen=True, slots=True)
class Heartbeat(SerialMessage):
    """Sent every heartbeat interval while connected; ``uptime_ms`` wraps like ``t_ms``."""

    TYPE = MessageType.HEARTBEAT
    RELIABLE = False
    DIRECTION = Direction.BOTH
    LAYOUT = struct.Struct(">I")

    uptime_ms: int

    def __post_init__(self) -> None:
        check_uint(self, "uptime_ms", 32)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.uptime_ms,)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(*values)


@dataclass(frozen=True, slots=True)
class Ack(SerialMessage):
    """Acknowledges the frame with sequence number ``seq`` (it had ACK_REQUESTED)."""

    TYPE = MessageType.ACK
    RELIABLE = False
    DIRECTION = Direction.BOTH
    LAYOUT = struct.Struct(">H")

    seq: int

    def __post_init__(self) -> None:
        check_uint(self, "seq", 16)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.seq,)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        return cls(*values)


@dataclass(frozen=True, slots=True)
class Nak(SerialMessage):
    """Refuses the frame with sequence number ``seq``, saying why."""

    TYPE = MessageType.NAK
    RELIABLE = False
    DIRECTION = Direction.BOTH
    LAYOUT = struct.Struct(">HB")

    seq: int
    reason: NakReason

    def __post_init__(self) -> None:
        check_uint(self, "seq", 16)
        check_enum(self, "reason", NakReason)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.seq, self.reason)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        seq, reason = values
        return cls(seq, decode_enum(cls, "reason", NakReason, reason))
