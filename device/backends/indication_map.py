"""How the camera's indications and state look and sound on the hardware.

The camera core decides *that* the officer is told something (``device.indications.Signal``);
this module decides how, for any backend. Pure functions, no state: ``HardwareBridge`` keeps
what it last showed and sends only changes.

Signals (``Indication.silent``, set in stealth mode, produces nothing at all):

======================  ===========================================  ========================
Signal                  Tone (frequency Hz, beep s, beeps)           Haptic (pattern, s)
======================  ===========================================  ========================
recording_started       2000 Hz, 0.10 s, x2                          1 (short), 0.20 s
recording_stopped       1000 Hz, 0.40 s, x1                          2 (long), 0.40 s
recording_reminder      2000 Hz, 0.05 s, x1                          1 (short), 0.10 s
sleep_reminder          --                                           1 (short), 0.10 s
marker                  3000 Hz, 0.05 s, x1                          --
confirm_stop            1500 Hz, 0.10 s, x3                          3 (pulses), 0.50 s
category_prompt         1200 Hz, 0.10 s, x2                          --
trigger_ignored         400 Hz, 0.20 s, x1                           --
battery                 600 Hz, 0.20 s, x3                           3 (pulses), 0.50 s
storage_full            500 Hz, 0.50 s, x2                           3 (pulses), 0.50 s
======================  ===========================================  ========================

Haptic patterns are board-defined numbers; the bench firmware reads 1 as one short buzz, 2 as one
long buzz and 3 as a train of pulses. A sleeping camera only vibrates: a beep would give away an
officer who put the camera to sleep on purpose (a restroom, a private conversation).

Status LED 0 (``STATUS_LED``), from the camera's state:

==========================  =================  ============
State                       Colour (r, g, b)   Pattern
==========================  =================  ============
recording, post-event       red (255, 0, 0)    solid; ``blink_slow`` when muted
buffering                   green (0, 255, 0)  ``blink_slow``; amber (255, 160, 0) when muted
sleeping, off               --                 ``off``
stealth mode (any state)    --                 ``off``
==========================  =================  ============

Display text: ``REC`` (recording or post-event), ``BUF`` (buffering), ``SLEEP``, ``OFF``, with
`` MUTE`` appended when the microphone is muted; empty (cleared) in stealth mode.

Each output needs a capability of the hardware (``CAPABILITY_OF``): ``leds``, ``haptic``,
``tone``, ``display``; the bridge drops the ones the hardware lacks.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from device.backends.events import (
    DisplayOutput,
    HapticOutput,
    LedOutput,
    Output,
    ToneOutput,
)
from device.camera_core import CameraState
from device.indications import Signal

STATUS_LED: Final = 0
"""The board's status LED index."""

RED: Final = (255, 0, 0)
GREEN: Final = (0, 255, 0)
AMBER: Final = (255, 160, 0)
DARK: Final = (0, 0, 0)

SHORT_BUZZ: Final = 1
LONG_BUZZ: Final = 2
PULSES: Final = 3

SIGNALS: Final[MappingProxyType[Signal, tuple[Output, ...]]] = MappingProxyType(
    {
        Signal.RECORDING_STARTED: (ToneOutput(2000, 0.1, 2), HapticOutput(SHORT_BUZZ, 0.2)),
        Signal.RECORDING_STOPPED: (ToneOutput(1000, 0.4, 1), HapticOutput(LONG_BUZZ, 0.4)),
        Signal.RECORDING_REMINDER: (ToneOutput(2000, 0.05, 1), HapticOutput(SHORT_BUZZ, 0.1)),
        Signal.SLEEP_REMINDER: (HapticOutput(SHORT_BUZZ, 0.1),),
        Signal.MARKER: (ToneOutput(3000, 0.05, 1),),
        Signal.CONFIRM_STOP: (ToneOutput(1500, 0.1, 3), HapticOutput(PULSES, 0.5)),
        Signal.CATEGORY_PROMPT: (ToneOutput(1200, 0.1, 2),),
        Signal.TRIGGER_IGNORED: (ToneOutput(400, 0.2, 1),),
        Signal.BATTERY: (ToneOutput(600, 0.2, 3), HapticOutput(PULSES, 0.5)),
        Signal.STORAGE_FULL: (ToneOutput(500, 0.5, 2), HapticOutput(PULSES, 0.5)),
    }
)
"""What each signal sounds and vibrates (the table in the module docstring)."""

CAPABILITY_OF: Final[MappingProxyType[type, str]] = MappingProxyType(
    {LedOutput: "leds", HapticOutput: "haptic", ToneOutput: "tone", DisplayOutput: "display"}
)
"""The hardware capability each kind of output needs."""

_RECORDING: Final = frozenset({CameraState.RECORDING, CameraState.POST_EVENT})

_TEXT: Final[MappingProxyType[CameraState, str]] = MappingProxyType(
    {
        CameraState.RECORDING: "REC",
        CameraState.POST_EVENT: "REC",
        CameraState.BUFFERING: "BUF",
        CameraState.SLEEPING: "SLEEP",
        CameraState.OFF: "OFF",
    }
)


def signal_outputs(signal: Signal) -> tuple[Output, ...]:
    """The tones and vibrations of ``signal`` (the caller skips silent indications)."""
    return SIGNALS[signal]


def status_led(state: CameraState, *, muted: bool, stealth: bool) -> LedOutput:
    """The status LED's wanted state for the camera's ``state`` and modes."""
    if stealth or state in (CameraState.OFF, CameraState.SLEEPING):
        return LedOutput(STATUS_LED, DARK, "off")
    if state in _RECORDING:
        return LedOutput(STATUS_LED, RED, "blink_slow" if muted else "solid")
    return LedOutput(STATUS_LED, AMBER if muted else GREEN, "blink_slow")


def status_text(state: CameraState, *, muted: bool, stealth: bool) -> str:
    """The display's wanted text for the camera's ``state`` and modes ("" clears it)."""
    if stealth:
        return ""
    text = _TEXT[state]
    return f"{text} MUTE" if muted and state is not CameraState.OFF else text


def capability_of(output: Output) -> str:
    """The capability the hardware needs for ``output``."""
    return CAPABILITY_OF[type(output)]
