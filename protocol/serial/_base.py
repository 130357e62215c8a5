"""Base class of serial messages, their type codes, and the field checks they share.

Every message validates its fields in ``__post_init__`` and raises ``FieldError`` (a
``LocalProtocolError``) naming the message, the field, what was expected and what was given.
Decoding reuses the same checks: ``SerialMessage.unpack`` turns a ``FieldError`` into a
``DecodeError`` with the same detail, so a bad payload from the peer is reported as precisely as
a bad value of ours.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

from protocol.errors import DecodeError, LocalProtocolError

_E = TypeVar("_E", bound=enum.IntEnum)


class MessageType(enum.IntEnum):
    """The frame ``type`` byte of each message: link control, inputs, outputs."""

    HELLO = 0x01
    HEARTBEAT = 0x02
    ACK = 0x03
    NAK = 0x04
    BUTTON_EDGE = 0x10
    HOLSTER = 0x11
    VEHICLE_INPUT = 0x12
    TASER = 0x13
    IMU_BATCH = 0x14
    GPS_FIX = 0x15
    BATTERY = 0x16
    LED = 0x20
    HAPTIC = 0x21
    TONE = 0x22
    DISPLAY_TEXT = 0x23


class Direction(enum.Enum):
    """Who may send a message: inputs go MCU to host, outputs host to MCU."""

    TO_HOST = "mcu->host"
    TO_MCU = "host->mcu"
    BOTH = "both"


class FieldError(LocalProtocolError):
    """A message field holds a value the protocol does not allow."""

    def __init__(self, owner: str, name: str, expected: str, got: str) -> None:
        self.field = f"{owner}.{name}"
        self.detail = f"expected {expected}, got {got}"
        super().__init__(f"{self.field}: {self.detail}")


@dataclass(frozen=True, slots=True)
class SerialMessage:
    """A message carried in one frame. Subclasses set the class constants and their layout."""

    TYPE: ClassVar[MessageType]
    RELIABLE: ClassVar[bool]
    """Whether ``SerialLink.send`` requests an ack for it unless told otherwise."""
    DIRECTION: ClassVar[Direction]
    LAYOUT: ClassVar[struct.Struct]
    """Fixed part of the payload (all of it, for fixed-size messages)."""

    def pack(self) -> bytes:
        """Return the payload bytes (big-endian)."""
        return self.LAYOUT.pack(*self._wire_values())

    @classmethod
    def unpack(cls, payload: bytes) -> Self:
        """Decode a payload; raise ``DecodeError`` naming the field and the values at fault."""
        with _field_errors_as_decode_errors(cls.__name__):
            return cls._unpack(payload)

    def _wire_values(self) -> tuple[int, ...]:
        raise NotImplementedError

    @classmethod
    def _unpack(cls, payload: bytes) -> Self:
        expect_length(cls, payload, cls.LAYOUT.size)
        return cls._from_wire(cls.LAYOUT.unpack(payload))

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        raise NotImplementedError


@contextmanager
def _field_errors_as_decode_errors(owner: str) -> Iterator[None]:
    try:
        yield
    except FieldError as error:
        raise DecodeError(f"{owner} payload: {error.detail}", where=error.field) from error


def expect_length(
    cls: type, payload: bytes, low: int, high: int | None = None, note: str = ""
) -> None:
    """Raise ``DecodeError`` unless ``payload`` is ``low`` (to ``high``) bytes long."""
    high = low if high is None else high
    if not low <= len(payload) <= high:
        expected = str(low) if low == high else f"{low}..{high}"
        raise DecodeError(
            f"{cls.__name__} payload: expected {expected} bytes{note}, got {len(payload)}",
            where=f"{cls.__name__} length",
        )


def check_int(obj: object, name: str, low: int, high: int) -> None:
    """Check that field ``name`` of ``obj`` is an int (not a bool) in ``low..high``."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(type(obj).__name__, name, f"int {low}..{high}", repr(value))


def check_uint(obj: object, name: str, bits: int, low: int = 0) -> None:
    """Check an unsigned field of ``bits`` bits (optionally with a higher minimum)."""
    check_int(obj, name, low, (1 << bits) - 1)


def check_bool(obj: object, name: str) -> None:
    """Check that field ``name`` is a real ``bool`` (C code sends 0 or 1, nothing else)."""
    value = getattr(obj, name)
    if not isinstance(value, bool):
        raise FieldError(type(obj).__name__, name, "bool", repr(value))


def check_enum(obj: object, name: str, enum_type: type[enum.Enum]) -> None:
    """Check that field ``name`` is a member of ``enum_type``."""
    value = getattr(obj, name)
    if not isinstance(value, enum_type):
        raise FieldError(type(obj).__name__, name, enum_type.__name__, repr(value))


def check_text(obj: object, name: str, max_bytes: int) -> None:
    """Check a string field: encodable as UTF-8, at most ``max_bytes`` bytes, no NUL."""
    value = getattr(obj, name)
    owner = type(obj).__name__
    if not isinstance(value, str):
        raise FieldError(owner, name, "str", repr(value))
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise FieldError(owner, name, "text encodable as UTF-8", repr(value)) from None
    if size > max_bytes:
        raise FieldError(owner, name, f"at most {max_bytes} UTF-8 bytes", f"{size} bytes")
    # C firmware keeps these in NUL-terminated buffers: an embedded NUL would truncate them.
    if "\x00" in value:
        raise FieldError(owner, name, "text without NUL characters", repr(value))


def decode_enum(cls: type, name: str, enum_type: type[_E], raw: int) -> _E:
    """Convert a wire value to ``enum_type``, or raise ``FieldError`` listing the valid codes."""
    try:
        return enum_type(raw)
    except ValueError:
        valid = ", ".join(f"{member.name}={member.value}" for member in enum_type)
        raise FieldError(cls.__name__, name, f"one of {valid}", str(raw)) from None


def decode_bool(cls: type, name: str, raw: int) -> bool:
    """Convert a wire byte to ``bool``: only 0 and 1 are valid."""
    if raw not in (0, 1):
        raise FieldError(cls.__name__, name, "0 or 1", str(raw))
    return raw == 1


def decode_text(cls: type, name: str, raw: bytes) -> str:
    """Decode UTF-8 text from the wire, or raise ``FieldError`` at the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start]
        raise FieldError(
            cls.__name__, name, "valid UTF-8", f"byte 0x{bad:02X} at offset {error.start}"
        ) from None
