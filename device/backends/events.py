"""What a hardware backend reports (inputs, link status) and what the camera asks of it (outputs).

Inputs carry ``hw_time_s``: the hardware's own monotonic clock in seconds (a microcontroller's
``millis()`` unwrapped, or the simulator's camera time). The camera uses it for intervals and
order between inputs (a press's length, which edge came first) and stamps events with its own
clock on arrival, as docs/protocol.md describes for the serial link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ButtonName = Literal["event", "power", "function", "volume_up", "volume_down"]
LineName = Literal["holster", "lightbar", "siren", "door", "taser_armed"]
TaserKind = Literal["taser_trigger", "taser_arc"]
LedPatternName = Literal["off", "solid", "blink_slow", "blink_fast"]

BUTTONS: Final[tuple[ButtonName, ...]] = ("event", "power", "function", "volume_up", "volume_down")
LINES: Final[tuple[LineName, ...]] = ("holster", "lightbar", "siren", "door", "taser_armed")

CAPABILITIES: Final = frozenset(
    {
        "buttons",
        "holster",
        "vehicle",
        "taser",
        "imu",
        "gps",
        "battery",
        "leds",
        "haptic",
        "tone",
        "display",
    }
)
"""What a backend may say it has (the serial Hello's capability bits, by name)."""


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonInput:
    """A button went down (``pressed``) or up."""

    button: ButtonName
    pressed: bool
    hw_time_s: float


@dataclass(frozen=True, slots=True)
class LineInput:
    """A digital input line changed: holster drawn, lightbar or siren on, door open, TASER armed."""

    line: LineName
    level: bool
    hw_time_s: float


@dataclass(frozen=True, slots=True)
class SpeedInput:
    """A vehicle speed sample in km/h."""

    kmh: float
    hw_time_s: float


@dataclass(frozen=True, slots=True)
class TaserInput:
    """A TASER trigger pull or arc (an instant)."""

    kind: TaserKind
    hw_time_s: float


@dataclass(frozen=True, slots=True)
class ImuInput:
    """Consecutive IMU samples: accelerations in g and rotation rates in deg/s, one row each.

    Sample ``i`` was taken at ``hw_time_s + i * period_s``.
    """

    hw_time_s: float
    period_s: float
    accel_g: tuple[tuple[float, float, float], ...]
    gyro_dps: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True, slots=True)
class GpsInput:
    """A GPS fix (``position`` is None when the receiver has no fix)."""

    position: tuple[float, float] | None
    accuracy_m: float | None
    hw_time_s: float


@dataclass(frozen=True, slots=True)
class BatteryInput:
    """The battery gauge."""

    percent: int
    millivolts: int
    charging: bool
    hw_time_s: float


HardwareInput = (
    ButtonInput | LineInput | SpeedInput | TaserInput | ImuInput | GpsInput | BatteryInput
)


# -- link status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUpEvent:
    """The hardware is there: at start, after a reconnect, or after it rebooted.

    ``rebooted`` is True when the hardware restarted since the last LinkUp (a new boot ID):
    its clock restarted and it forgot the outputs, so the camera sends them again.
    """

    description: str
    capabilities: frozenset[str]
    rebooted: bool = False


@dataclass(frozen=True, slots=True)
class LinkDownEvent:
    """The hardware went away (port unplugged, heartbeats lost); the camera keeps running."""

    reason: str


BackendEvent = HardwareInput | LinkUpEvent | LinkDownEvent


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedOutput:
    """Set LED ``led`` (board-defined index) to a colour and pattern."""

    led: int
    rgb: tuple[int, int, int]
    pattern: LedPatternName


@dataclass(frozen=True, slots=True)
class HapticOutput:
    """Run vibration ``pattern`` (board-defined) for ``duration_s`` (0 stops it)."""

    pattern: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class ToneOutput:
    """Beep ``repeat`` times at ``frequency_hz``, each beep ``duration_s`` long."""

    frequency_hz: int
    duration_s: float
    repeat: int = 1


@dataclass(frozen=True, slots=True)
class DisplayOutput:
    """Show ``text`` (at most 64 UTF-8 bytes; empty clears the display)."""

    text: str


Output = LedOutput | HapticOutput | ToneOutput | DisplayOutput
