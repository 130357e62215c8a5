"""Conversions between serial bench-link messages and hardware backend events and outputs.

Pure functions and one small stateful helper, no I/O, so the serial backend and the tests (its
fake microcontroller included) share one mapping:

* ``input_event(message, hw_time_s)`` and its inverse ``input_message(event, t_ms)``;
* ``output_message(output)`` and its inverse ``output_event(message)``; ``state_key``;
* ``capability_names(bits)``: the Hello's capability bits as ``events.CAPABILITIES`` names;
* ``LINK_COUNTERS``, ``OWN_COUNTERS``, ``link_counts``: the backend's counter names;
* ``HOST_CAPABILITIES``, ``check_options``: what the host announces; constructor checks;
* ``McuClock``: the MCU's wrapping ``t_ms`` stamps unwrapped into seconds, per MCU boot.

The queue behind ``SerialBackend.events()`` and the hold that orders inputs after a loss are in
``serial_delivery``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Final, get_args

from device.backends.events import (
    BUTTONS,
    BatteryInput,
    ButtonInput,
    ButtonName,
    DisplayOutput,
    GpsInput,
    HapticOutput,
    HardwareInput,
    ImuInput,
    LedOutput,
    LedPatternName,
    LineInput,
    LineName,
    Output,
    SpeedInput,
    TaserInput,
    ToneOutput,
)
from device.errors import ConfigError
from protocol.errors import LocalProtocolError
from protocol.serial import (
    SERIAL_PROTOCOL_VERSION,
    Battery,
    Button,
    ButtonEdge,
    Capability,
    DisplayText,
    GpsFix,
    GpsFixType,
    Haptic,
    Hello,
    Holster,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    Role,
    SerialLink,
    Taser,
    TaserEvent,
    Tone,
    VehicleInput,
    VehicleInputKind,
    t_ms_delta,
)

InputMessage = ButtonEdge | Holster | VehicleInput | Taser | ImuBatch | GpsFix | Battery
OutputMessage = Led | Haptic | Tone | DisplayText
INPUT_MESSAGES: Final = (ButtonEdge, Holster, VehicleInput, Taser, ImuBatch, GpsFix, Battery)
"""The message classes ``input_event`` converts, for ``isinstance``."""

# Both sides list their members in the same order (a test checks the names agree).
_BUTTONS: Final[dict[Button, ButtonName]] = dict(zip(Button, BUTTONS, strict=True))
_BUTTON_CODES: Final = {name: code for code, name in _BUTTONS.items()}
_VEHICLE_LINES: Final[dict[VehicleInputKind, LineName]] = {
    VehicleInputKind.LIGHTBAR: "lightbar",
    VehicleInputKind.SIREN: "siren",
    VehicleInputKind.DOOR: "door",
}
_LINE_VEHICLE: Final = {name: kind for kind, name in _VEHICLE_LINES.items()}
_PATTERNS: Final[dict[LedPattern, LedPatternName]] = dict(
    zip(LedPattern, get_args(LedPatternName), strict=True)
)
_PATTERN_CODES: Final = {name: code for code, name in _PATTERNS.items()}
_UNKNOWN_ACCURACY: Final = 0xFFFF
_U16_MAX: Final = 0xFFFF


def capability_names(bits: int) -> frozenset[str]:
    """The names (``events.CAPABILITIES``) of the known bits set in ``bits``; others ignored."""
    return frozenset(
        flag.name.lower() for flag in Capability if flag.name is not None and bits & flag
    )


# -- inputs -------------------------------------------------------------------------------------


def input_event(message: InputMessage, hw_time_s: float) -> HardwareInput:  # noqa: PLR0911 - one per type
    """The backend event for an input message stamped ``hw_time_s`` (its unwrapped ``t_ms``)."""
    match message:
        case ButtonEdge():
            return ButtonInput(_BUTTONS[message.button], message.pressed, hw_time_s)
        case Holster():
            return LineInput("holster", message.drawn, hw_time_s)
        case VehicleInput():
            if message.input is VehicleInputKind.SPEED:
                return SpeedInput(float(message.value), hw_time_s)
            return LineInput(_VEHICLE_LINES[message.input], message.value == 1, hw_time_s)
        case Taser():
            return _taser_event(message.event, hw_time_s)
        case ImuBatch():
            return _imu_event(message, hw_time_s)
        case GpsFix():
            return _gps_event(message, hw_time_s)
        case Battery():
            return BatteryInput(message.percent, message.millivolts, message.charging, hw_time_s)


def _taser_event(event: TaserEvent, hw_time_s: float) -> LineInput | TaserInput:
    if event is TaserEvent.ARMED or event is TaserEvent.SAFE:
        return LineInput("taser_armed", event is TaserEvent.ARMED, hw_time_s)
    return TaserInput("taser_trigger" if event is TaserEvent.TRIGGER else "taser_arc", hw_time_s)


def _imu_event(batch: ImuBatch, hw_time_s: float) -> ImuInput:
    # Wire units: milli-g and 0.1 deg/s (int16 each), so the MCU needs no floating point.
    return ImuInput(
        hw_time_s=hw_time_s,
        period_s=batch.period_ms / 1000,
        accel_g=tuple((s.ax / 1000, s.ay / 1000, s.az / 1000) for s in batch.samples),
        gyro_dps=tuple((s.gx / 10, s.gy / 10, s.gz / 10) for s in batch.samples),
    )


def _gps_event(fix: GpsFix, hw_time_s: float) -> GpsInput:
    if fix.fix is GpsFixType.NONE:
        return GpsInput(None, None, hw_time_s)
    accuracy = None if fix.accuracy_m == _UNKNOWN_ACCURACY else float(fix.accuracy_m)
    return GpsInput((fix.lat_e7 / 1e7, fix.lon_e7 / 1e7), accuracy, hw_time_s)


def input_message(event: HardwareInput, t_ms: int) -> InputMessage:  # noqa: PLR0911 - one per type
    """The message an MCU sends for ``event`` at ``t_ms`` (fake MCUs and round-trip tests).

    Values are rounded to the wire's units; raises ``FieldError`` for one the wire cannot carry.
    """
    match event:
        case ButtonInput():
            return ButtonEdge(t_ms, _BUTTON_CODES[event.button], event.pressed)
        case LineInput(line="holster"):
            return Holster(t_ms, event.level)
        case LineInput(line="taser_armed"):
            return Taser(t_ms, TaserEvent.ARMED if event.level else TaserEvent.SAFE)
        case LineInput():
            return VehicleInput(t_ms, _LINE_VEHICLE[event.line], int(event.level))
        case SpeedInput():
            return VehicleInput(t_ms, VehicleInputKind.SPEED, round(event.kmh))
        case TaserInput():
            kind = TaserEvent.TRIGGER if event.kind == "taser_trigger" else TaserEvent.ARC
            return Taser(t_ms, kind)
        case ImuInput():
            return _imu_message(event, t_ms)
        case GpsInput():
            return _gps_message(event, t_ms)
        case BatteryInput():
            return Battery(t_ms, event.percent, event.millivolts, event.charging)


def _imu_message(event: ImuInput, t_ms: int) -> ImuBatch:
    samples = tuple(
        ImuSample(*(round(v * 1000) for v in accel), *(round(v * 10) for v in gyro))
        for accel, gyro in zip(event.accel_g, event.gyro_dps, strict=True)
    )
    return ImuBatch(t_ms, round(event.period_s * 1000), samples)


def _gps_message(event: GpsInput, t_ms: int) -> GpsFix:
    if event.position is None:
        return GpsFix(t_ms, GpsFixType.NONE, 0, 0, _UNKNOWN_ACCURACY)
    lat, lon = event.position
    accuracy = _UNKNOWN_ACCURACY if event.accuracy_m is None else round(event.accuracy_m)
    return GpsFix(
        t_ms, GpsFixType.FIX_3D, round(lat * 1e7), round(lon * 1e7), min(accuracy, _U16_MAX)
    )


# -- outputs ------------------------------------------------------------------------------------


def output_message(output: Output) -> OutputMessage:
    """The message that asks the MCU for ``output``.

    Durations are rounded to milliseconds and clamped to what the wire carries (0-65535 ms,
    at least 1 ms for a tone): a vibration or beep longer than a minute is not a real request.
    Raises ``FieldError`` (a ``LocalProtocolError``) for values the wire has no room for: an
    LED index or colour outside 0-255, a tone outside 20-20000 Hz, text over 64 UTF-8 bytes.
    """
    match output:
        case LedOutput():
            r, g, b = output.rgb
            return Led(output.led, r, g, b, _PATTERN_CODES[output.pattern])
        case HapticOutput():
            return Haptic(output.pattern, _milliseconds(output.duration_s, low=0))
        case ToneOutput():
            duration = _milliseconds(output.duration_s, low=1)
            return Tone(output.frequency_hz, duration, output.repeat)
        case DisplayOutput():
            return DisplayText(output.text)


StateKey = tuple[str, int]
"""An output whose latest state is kept and re-sent: ("led", index) or ("display", 0)."""


def state_key(message: OutputMessage) -> StateKey | None:
    """Which output state ``message`` sets; None for one-shot tones and vibrations."""
    if isinstance(message, Led):
        return ("led", message.led)
    if isinstance(message, DisplayText):
        return ("display", 0)
    return None


def _milliseconds(seconds: float, *, low: int) -> int:
    return max(low, min(_U16_MAX, round(seconds * 1000)))


def output_event(message: OutputMessage) -> Output:
    """The backend output a message stands for (what a fake MCU shows; round-trip tests)."""
    match message:
        case Led():
            return LedOutput(
                message.led, (message.r, message.g, message.b), _PATTERNS[message.pattern]
            )
        case Haptic():
            return HapticOutput(message.pattern, message.duration_ms / 1000)
        case Tone():
            return ToneOutput(message.frequency_hz, message.duration_ms / 1000, message.repeat)
        case DisplayText():
            return DisplayOutput(message.text)


# -- counters ---------------------------------------------------------------------------------

_SAME_NAMES: Final = (
    "frames_received frames_sent crc_errors cobs_errors bytes_dropped resyncs retries naks_sent"
)
LINK_COUNTERS: Final[Mapping[str, str]] = {
    **{name: name for name in _SAME_NAMES.split()},
    "duplicates": "duplicates_suppressed",
    "naks": "naks_received",
    "bad_version": "version_mismatches",
    "rejected": "messages_rejected",
    "ignored": "frames_ignored",
}
"""``LinkCounters`` field -> backend counter name; summed over every port session."""

OWN_COUNTERS: Final = (
    "link_losses",
    "reconnects",
    "port_losses",
    "reopen_failures",
    "delivery_failed",
    "events_dropped",
    "outputs_deferred",
    "outputs_dropped",
    "internal_errors",
)
"""Counters the backend keeps itself: link downs and ups, port losses, drops, bugs caught."""


def link_counts(link: SerialLink) -> Counter[str]:
    """The link's counters under the backend's names (``LINK_COUNTERS``)."""
    counters = link.counters
    return Counter({name: getattr(counters, field) for field, name in LINK_COUNTERS.items()})


# -- options ----------------------------------------------------------------------------------

HOST_CAPABILITIES: Final = Capability((1 << 11) - 1)
"""The host reads every input and drives every output the protocol has."""


def check_options(port: object, boot_id: int, firmware: str, **values: float) -> None:
    """Raise ``ConfigError`` for a ``SerialBackend`` option that cannot work."""
    if not isinstance(port, str) or not port:
        raise ConfigError(f"serial backend: port must be a device path or URL, got {port!r}")
    for name, value in values.items():
        whole = name in ("baudrate", "max_queued_events")
        valid = isinstance(value, int) if whole else isinstance(value, int | float)
        if isinstance(value, bool) or not valid or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"serial backend: {name} must be > 0, got {value!r}")
    try:
        Hello(SERIAL_PROTOCOL_VERSION, Role.HOST, HOST_CAPABILITIES, boot_id, firmware)
    except LocalProtocolError as error:
        raise ConfigError(f"serial backend: {error}") from error


# -- MCU time -----------------------------------------------------------------------------------


class McuClock:
    """Unwraps the MCU's u32 ``t_ms`` into seconds that keep growing past the 49.7-day wrap.

    Stamps are read against the newest one seen, with ``t_ms_delta`` (signed, modulo 2**32), so
    an older stamp delivered late (a retransmission) maps just before it, not 49.7 days after.
    The first stamp of a boot maps to itself. Call ``restart`` when the MCU reboots: its counter
    started again.
    """

    __slots__ = ("_newest_extended", "_newest_raw")

    def __init__(self) -> None:
        self._newest_raw: int | None = None
        self._newest_extended = 0

    def restart(self) -> None:
        """Forget the previous boot's counter."""
        self._newest_raw = None
        self._newest_extended = 0

    def seconds(self, t_ms: int) -> float:
        """The unwrapped time of ``t_ms`` in seconds."""
        return self.milliseconds(t_ms) / 1000

    def milliseconds(self, t_ms: int) -> int:
        """The unwrapped time of ``t_ms`` in milliseconds."""
        if self._newest_raw is None:
            self._newest_raw, self._newest_extended = t_ms, t_ms
            return t_ms
        delta = t_ms_delta(t_ms, self._newest_raw)
        extended = self._newest_extended + delta
        if delta > 0:
            self._newest_raw, self._newest_extended = t_ms, extended
        return extended
