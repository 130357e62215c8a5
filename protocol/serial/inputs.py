"""Input messages: what the bench microcontroller reports to the host.

Each carries ``t_ms``, the MCU's millisecond counter (u32 since MCU boot) when the input was
sampled. It wraps after 2**32 ms (about 49.7 days): compare two stamps with ``t_ms_delta``, never
with ``<``. State changes (buttons, holster, vehicle, TASER) are sent reliably; streams (IMU, GPS,
battery) are best-effort because the next sample supersedes a lost one.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, Self

from protocol.serial._base import (
    Direction,
    FieldError,
    MessageType,
    SerialMessage,
    check_bool,
    check_enum,
    check_int,
    check_uint,
    decode_bool,
    decode_enum,
    expect_length,
)

_WRAP: Final = 1 << 32


def t_ms_delta(later: int, earlier: int) -> int:
    """Signed milliseconds from ``earlier`` to ``later``, correct across one u32 wrap-around.

    Serial-number arithmetic: the result is in ``-2**31 .. 2**31 - 1``, so stamps less than
    about 24.8 days apart compare correctly even when the counter wrapped between them.
    """
    return (later - earlier + (_WRAP >> 1)) % _WRAP - (_WRAP >> 1)


class Button(enum.IntEnum):
    """Physical buttons of the camera."""

    EVENT = 1
    POWER = 2
    FUNCTION = 3
    VOLUME_UP = 4
    VOLUME_DOWN = 5


class VehicleInputKind(enum.IntEnum):
    """Vehicle signals wired to the bench (12 V inputs or a CAN/BLE bridge)."""

    LIGHTBAR = 1
    SIREN = 2
    DOOR = 3
    SPEED = 4


class TaserEvent(enum.IntEnum):
    """Conducted energy weapon events."""

    ARMED = 1
    SAFE = 2
    TRIGGER = 3
    ARC = 4


class GpsFixType(enum.IntEnum):
    """Quality of a GPS fix; the codes are those of u-blox ``fixType``."""

    NONE = 0
    FIX_2D = 2
    FIX_3D = 3


@dataclass(frozen=True, slots=True)
class ButtonEdge(SerialMessage):
    """A button was pressed (``pressed=True``) or released."""

    TYPE = MessageType.BUTTON_EDGE
    RELIABLE = True
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IBB")

    t_ms: int
    button: Button
    pressed: bool

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_enum(self, "button", Button)
        check_bool(self, "pressed")

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.button, self.pressed)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, button, pressed = values
        return cls(
            t_ms, decode_enum(cls, "button", Button, button), decode_bool(cls, "pressed", pressed)
        )


@dataclass(frozen=True, slots=True)
class Holster(SerialMessage):
    """The sidearm left (``drawn=True``) or returned to the holster."""

    TYPE = MessageType.HOLSTER
    RELIABLE = True
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IB")

    t_ms: int
    drawn: bool

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_bool(self, "drawn")

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.drawn)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, drawn = values
        return cls(t_ms, decode_bool(cls, "drawn", drawn))


@dataclass(frozen=True, slots=True)
class VehicleInput(SerialMessage):
    """A vehicle signal changed: 0/1 for lightbar, siren, door (1 = open); km/h for speed."""

    TYPE = MessageType.VEHICLE_INPUT
    RELIABLE = True
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IBH")

    t_ms: int
    input: VehicleInputKind
    value: int

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_enum(self, "input", VehicleInputKind)
        if self.input is VehicleInputKind.SPEED:
            check_uint(self, "value", 16)
        else:
            check_int(self, "value", 0, 1)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.input, self.value)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, kind, value = values
        return cls(t_ms, decode_enum(cls, "input", VehicleInputKind, kind), value)


@dataclass(frozen=True, slots=True)
class Taser(SerialMessage):
    """A TASER (conducted energy weapon) event."""

    TYPE = MessageType.TASER
    RELIABLE = True
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IB")

    t_ms: int
    event: TaserEvent

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_enum(self, "event", TaserEvent)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.event)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, event = values
        return cls(t_ms, decode_enum(cls, "event", TaserEvent, event))


@dataclass(frozen=True, slots=True)
class ImuSample:
    """One IMU reading: acceleration in milli-g, angular rate in 0.1 deg/s, all int16."""

    LAYOUT = struct.Struct(">hhhhhh")

    ax: int
    ay: int
    az: int
    gx: int
    gy: int
    gz: int

    def __post_init__(self) -> None:
        for name in ("ax", "ay", "az", "gx", "gy", "gz"):
            check_int(self, name, -0x8000, 0x7FFF)


IMU_BATCH_HEADER: Final = struct.Struct(">IHB")
MAX_IMU_SAMPLES: Final = 84
"""Most samples in one ImuBatch: 7 + 84 * 12 = 1015 bytes, within the 1024-byte payload."""


@dataclass(frozen=True, slots=True)
class ImuBatch(SerialMessage):
    """Consecutive IMU samples, the first taken at ``t_ms``, one every ``period_ms``."""

    TYPE = MessageType.IMU_BATCH
    RELIABLE = False
    DIRECTION = Direction.TO_HOST
    LAYOUT = IMU_BATCH_HEADER

    t_ms: int
    period_ms: int
    samples: tuple[ImuSample, ...]

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_uint(self, "period_ms", 16, low=1)
        samples = self.samples
        if not isinstance(samples, tuple) or not all(isinstance(s, ImuSample) for s in samples):
            raise FieldError("ImuBatch", "samples", "tuple of ImuSample", repr(samples))
        if not 1 <= len(samples) <= MAX_IMU_SAMPLES:
            raise FieldError(
                "ImuBatch", "samples", f"1..{MAX_IMU_SAMPLES} samples", str(len(samples))
            )

    def pack(self) -> bytes:
        """Return the payload: header, then each sample's six int16 values."""
        header = self.LAYOUT.pack(self.t_ms, self.period_ms, len(self.samples))
        body = b"".join(
            ImuSample.LAYOUT.pack(s.ax, s.ay, s.az, s.gx, s.gy, s.gz) for s in self.samples
        )
        return header + body

    @classmethod
    def _unpack(cls, payload: bytes) -> Self:
        header_size, sample_size = cls.LAYOUT.size, ImuSample.LAYOUT.size
        expect_length(cls, payload, header_size, header_size + MAX_IMU_SAMPLES * sample_size)
        t_ms, period_ms, count = cls.LAYOUT.unpack(payload[:header_size])
        expect_length(cls, payload, header_size + count * sample_size, note=f" for {count} samples")
        samples = tuple(
            ImuSample(*values) for values in ImuSample.LAYOUT.iter_unpack(payload[header_size:])
        )
        return cls(t_ms, period_ms, samples)


@dataclass(frozen=True, slots=True)
class GpsFix(SerialMessage):
    """A GPS position: degrees times 10**7; ``accuracy_m`` 65535 means unknown or worse."""

    TYPE = MessageType.GPS_FIX
    RELIABLE = False
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IBiiH")

    t_ms: int
    fix: GpsFixType
    lat_e7: int
    lon_e7: int
    accuracy_m: int

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_enum(self, "fix", GpsFixType)
        check_int(self, "lat_e7", -900_000_000, 900_000_000)
        check_int(self, "lon_e7", -1_800_000_000, 1_800_000_000)
        check_uint(self, "accuracy_m", 16)

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.fix, self.lat_e7, self.lon_e7, self.accuracy_m)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, fix, lat_e7, lon_e7, accuracy_m = values
        return cls(t_ms, decode_enum(cls, "fix", GpsFixType, fix), lat_e7, lon_e7, accuracy_m)


@dataclass(frozen=True, slots=True)
class Battery(SerialMessage):
    """Battery state of charge, voltage and charger status."""

    TYPE = MessageType.BATTERY
    RELIABLE = False
    DIRECTION = Direction.TO_HOST
    LAYOUT = struct.Struct(">IBHB")

    t_ms: int
    percent: int
    millivolts: int
    charging: bool

    def __post_init__(self) -> None:
        check_uint(self, "t_ms", 32)
        check_int(self, "percent", 0, 100)
        check_uint(self, "millivolts", 16)
        check_bool(self, "charging")

    def _wire_values(self) -> tuple[int, ...]:
        return (self.t_ms, self.percent, self.millivolts, self.charging)

    @classmethod
    def _from_wire(cls, values: tuple[int, ...]) -> Self:
        t_ms, percent, millivolts, charging = values
        return cls(t_ms, percent, millivolts, decode_bool(cls, "charging", charging))
