"""Output messages: what the host asks the bench microcontroller to show, sound or vibrate.

All are sent reliably: a lost "LED off" would leave the bench showing a state the camera is not
in. Each message describes the whole wanted state of its output, so applying one twice is
harmless; duplicates are still suppressed by the link.
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
    check_int,
    check_text,
    check_uint,
    decode_enum,
    decode_text,
    expect_length,
)

MAX_DISPLAY_TEXT: Final = 64
"""Longest ``DisplayText.text``, in UTF-8 bytes."""


class LedPattern(enum.IntEnum):
    """How an LED shows its colour."""

    OFF = 0
    SOLID = 1
    BLINK_SLOW = 2
    BLINK_FAST = 3


@dataclass(frozen=True, slots=True)
class Led(SerialMessage):
    """Set LED ``led`` (a board-defined index) to colour ``r, g, b`` and ``pattern``."""

    TYPE = MessageType.LED
    RELIABLE = True
    DIRECTION = Direction.TO_MCU
    LAYOUT = struct.Struct(">BBBBB")

    led: int
    r: int
    g: int
    b: int
    pattern: LedPattern

    def __post_init__(self) -> None:
        for name in ("led", "r", "g", "b"):
            check_uint(self, name, 8)
        check_enum(self, "pattern", LedPattern)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.led, self.r, self.g, self.b, self.pattern)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        led, r, g, b, pattern = values
        return cls(led, r, g, b, decode_enum(cls, "pattern", LedPattern, pattern))


@dataclass(frozen=True, slots=True)
class Haptic(SerialMessage):
    """Run vibration ``pattern`` (board-defined) for ``duration_ms``; 0 ms stops it."""

    TYPE = MessageType.HAPTIC
    RELIABLE = True
    DIRECTION = Direction.TO_MCU
    LAYOUT = struct.Struct(">BH")

    pattern: int
    duration_ms: int

    def __post_init__(self) -> None:
        check_uint(self, "pattern", 8)
        check_uint(self, "duration_ms", 16)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.pattern, self.duration_ms)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        pattern, duration_ms = values
        return cls(pattern, duration_ms)


@dataclass(frozen=True, slots=True)
class Tone(SerialMessage):
    """Beep at ``frequency_hz`` (20..20000) for ``duration_ms``, ``repeat`` times (1..255)."""

    TYPE = MessageType.TONE
    RELIABLE = True
    DIRECTION = Direction.TO_MCU
    LAYOUT = struct.Struct(">HHB")

    frequency_hz: int
    duration_ms: int
    repeat: int = 1

    def __post_init__(self) -> None:
        check_int(self, "frequency_hz", 20, 20_000)
        check_uint(self, "duration_ms", 16, low=1)
        check_uint(self, "repeat", 8, low=1)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.frequency_hz, self.duration_ms, self.repeat)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        frequency_hz, duration_ms, repeat = values
        return cls(frequency_hz, duration_ms, repeat)


@dataclass(frozen=True, slots=True)
class DisplayText(SerialMessage):
    """Show ``text`` (UTF-8, at most 64 bytes, no NUL) on the display; empty text clears it."""

    TYPE = MessageType.DISPLAY_TEXT
    RELIABLE = True
    DIRECTION = Direction.TO_MCU
    LAYOUT = struct.Struct(">")

    text: str

    def __post_init__(self) -> None:
        check_text(self, "text", MAX_DISPLAY_TEXT)

    def pack(self) -> bytes:
        """Return the payload: the text's UTF-8 bytes, nothing else (the frame gives the length)."""
        return self.text.encode("utf-8")

    @classmethod
    def _unpack(cls, payload: bytes) -> Self:
        expect_length(cls, payload, 0, MAX_DISPLAY_TEXT)
        return cls(decode_text(cls, "text", payload))
