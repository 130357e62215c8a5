"""The bench console's command language, and a scenario's hardware actions as timed MCU inputs.

One line is one command; blank lines and ``#`` comments are ignored. The fake MCU
(``bwc-sim bench-mcu``) takes the input commands, the bench console (``bwc-sim bench``) the
output commands; both take ``wait``, ``help`` and ``quit``. ``parse_command`` raises
``CommandError`` with what is wrong and the valid forms, so a console can print it and go on.

``plan_scenario`` turns a scenario's hardware actions (``button``, ``input``, ``speed``, and on
request ``trigger`` of kind ``taser_trigger``/``taser_arc``) into the frames an MCU would send,
with the same random timing as the virtual-time run (one generator per sensor action, seeded
from the device seed and the action's place among the sensor actions, as ``sim.runner`` does).
The MCU debounces in firmware, so contact bounce and line glitches shorter than its debounce
never reach the wire: a button burst is reported once, at its first edge.
"""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal

from device.errors import ConfigError
from protocol.serial import (
    Battery,
    Button,
    ButtonEdge,
    DisplayText,
    FieldError,
    Haptic,
    Holster,
    Led,
    LedPattern,
    Role,
    SerialMessage,
    Taser,
    TaserEvent,
    Tone,
    VehicleInput,
    VehicleInputKind,
)
from sim.media import derive_seed
from sim.scenario import Scenario
from sim.scenario_timeline import Audio, Gps, Imu, Input, Speed, TriggerAction
from sim.scenario_timeline import Button as ButtonAction
from sim.sensors_button import DEFAULT_MODEL, ButtonModel, edges_for

GestureName = Literal["press", "double_press", "hold"]
NO_BOUNCE: Final = replace(DEFAULT_MODEL, max_bounces=0)
MCU_LINE_DEBOUNCE_S: Final = 0.02
"""Line glitches shorter than this are filtered by the fake MCU's firmware, as a real one would."""


class CommandError(ValueError):
    """A console line that is not a valid command; the message says why and the valid forms."""


@dataclass(frozen=True, slots=True)
class GestureCommand:
    """Press, double-press or hold ``button`` with human timing (``hold_s`` fixes a hold)."""

    gesture: GestureName
    button: Button = Button.EVENT
    hold_s: float | None = None


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send ``message`` (an input stamped with ``t_ms`` when sent, or an output)."""

    message: SerialMessage


@dataclass(frozen=True, slots=True)
class WaitCommand:
    """Do nothing for ``seconds`` (scripts piped to the console pace themselves with it)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class QuitCommand:
    """Leave the console cleanly."""


@dataclass(frozen=True, slots=True)
class HelpCommand:
    """List the commands."""


Command = GestureCommand | SendCommand | WaitCommand | QuitCommand | HelpCommand


@dataclass(frozen=True, slots=True)
class _Verb:
    usage: str
    side: Role | None  # None: both consoles
    parse: Callable[[list[str], str], Command]


def _word(args: list[str], choices: Mapping[str, object], default: str | None = None) -> object:
    if not args and default is not None:
        return choices[default]
    if len(args) != 1 or args[0].lower() not in choices:
        got = " ".join(args) or "nothing"
        raise CommandError(f"expected one of {'|'.join(choices)}, got {got}")
    return choices[args[0].lower()]


def _number(text: str, name: str, low: float, high: float, *, integer: bool = True) -> float:
    try:
        value = int(text, 0) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise CommandError(f"{name} must be {kind} {low:g}-{high:g}, got {text!r}") from None
    if not low <= value <= high:
        raise CommandError(f"{name} must be {low:g}-{high:g}, got {text}")
    return value


def _count(args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        expected = str(low) if low == high else f"{low} to {high}"
        raise CommandError(f"expected {expected} arguments, got {len(args)}")


BUTTONS: Final = {button.name.lower(): button for button in Button}
_LEVELS: Final = {
    "holster": {"drawn": True, "holstered": False},
    "lightbar": {"on": True, "off": False},
    "siren": {"on": True, "off": False},
    "door": {"open": True, "closed": False},
}
_VEHICLE: Final = {
    "lightbar": VehicleInputKind.LIGHTBAR,
    "siren": VehicleInputKind.SIREN,
    "door": VehicleInputKind.DOOR,
}
_TASER: Final = {event.name.lower(): event for event in TaserEvent}
_PATTERNS: Final = {pattern.name.lower(): pattern for pattern in LedPattern}


def _gesture(gesture: GestureName) -> Callable[[list[str], str], Command]:
    def parse(args: list[str], _raw: str) -> Command:
        _count(args, 0, 2 if gesture == "hold" else 1)
        hold_s, words = None, []
        for arg in args:
            if gesture == "hold" and arg[:1].isdigit():
                hold_s = _number(arg, "SECONDS", 0.05, 600, integer=False)
            else:
                words.append(arg)
        button = _word(words, BUTTONS, "event")
        assert isinstance(button, Button)
        return GestureCommand(gesture, button, hold_s)

    return parse


def _edge(*, pressed: bool) -> Callable[[list[str], str], Command]:
    def parse(args: list[str], _raw: str) -> Command:
        button = _word(args, BUTTONS, "event")
        assert isinstance(button, Button)
        return SendCommand(ButtonEdge(0, button, pressed))

    return parse


def _level(name: str) -> Callable[[list[str], str], Command]:
    def parse(args: list[str], _raw: str) -> Command:
        level = bool(_word(args, _LEVELS[name]))
        if name == "holster":
            return SendCommand(Holster(0, level))
        return SendCommand(VehicleInput(0, _VEHICLE[name], int(level)))

    return parse


def _speed(args: list[str], _raw: str) -> Command:
    _count(args, 1, 1)
    kmh = _number(args[0], "KMH", 0, 65535, integer=False)
    return SendCommand(VehicleInput(0, VehicleInputKind.SPEED, round(kmh)))


def _taser(args: list[str], _raw: str) -> Command:
    event = _word(args, _TASER)
    assert isinstance(event, TaserEvent)
    return SendCommand(Taser(0, event))


def _battery(args: list[str], _raw: str) -> Command:
    _count(args, 1, 2)
    percent = int(_number(args[0].rstrip("%"), "PERCENT", 0, 100))
    charging = bool(_word(args[1:], {"charging": True, "discharging": False}, "discharging"))
    # A Li-ion cell from 3.3 V empty to 4.2 V full: good enough for a bench gauge.
    return SendCommand(Battery(0, percent, 3300 + 9 * percent, charging))


def _led(args: list[str], _raw: str) -> Command:
    _count(args, 4, 5)
    index, r, g, b = (
        int(_number(arg, name, 0, 255))
        for arg, name in zip(args, ("INDEX", "R", "G", "B"), strict=False)
    )
    pattern = _word(args[4:], _PATTERNS, "solid")
    assert isinstance(pattern, LedPattern)
    return SendCommand(Led(index, r, g, b, pattern))


def _tone(args: list[str], _raw: str) -> Command:
    _count(args, 2, 3)
    hz = int(_number(args[0], "HZ", 20, 20_000))
    ms = int(_number(args[1].removesuffix("ms"), "MS", 1, 65535))
    repeat = int(_number(args[2].lstrip("x"), "REPEAT", 1, 255)) if len(args) == 3 else 1
    return SendCommand(Tone(hz, ms, repeat))


def _haptic(args: list[str], _raw: str) -> Command:
    _count(args, 2, 2)
    pattern = int(_number(args[0], "PATTERN", 0, 255))
    return SendCommand(Haptic(pattern, int(_number(args[1].removesuffix("ms"), "MS", 0, 65535))))


def _display(_args: list[str], raw: str) -> Command:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            text = str(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CommandError(f"bad quoted text: {exc}") from None
    try:
        return SendCommand(DisplayText(text))
    except FieldError as exc:
        raise CommandError(f"TEXT: {exc.detail}") from None


def _wait(args: list[str], _raw: str) -> Command:
    _count(args, 1, 1)
    return WaitCommand(_number(args[0].removesuffix("s"), "SECONDS", 0, 3600, integer=False))


def _no_args(command: Command) -> Callable[[list[str], str], Command]:
    def parse(args: list[str], _raw: str) -> Command:
        _count(args, 0, 0)
        return command

    return parse


_BUTTON_WORDS: Final = "|".join(BUTTONS)
VERBS: Final[Mapping[str, _Verb]] = {
    "press": _Verb(f"press [{_BUTTON_WORDS}]", Role.MCU, _gesture("press")),
    "double": _Verb("double [BUTTON]", Role.MCU, _gesture("double_press")),
    "hold": _Verb("hold [SECONDS] [BUTTON]", Role.MCU, _gesture("hold")),
    "down": _Verb("down [BUTTON]", Role.MCU, _edge(pressed=True)),
    "up": _Verb("up [BUTTON]", Role.MCU, _edge(pressed=False)),
    "holster": _Verb("holster drawn|holstered", Role.MCU, _level("holster")),
    "lightbar": _Verb("lightbar on|off", Role.MCU, _level("lightbar")),
    "siren": _Verb("siren on|off", Role.MCU, _level("siren")),
    "door": _Verb("door open|closed", Role.MCU, _level("door")),
    "speed": _Verb("speed KMH", Role.MCU, _speed),
    "taser": _Verb("taser armed|safe|trigger|arc", Role.MCU, _taser),
    "battery": _Verb("battery PERCENT [charging]", Role.MCU, _battery),
    "led": _Verb("led INDEX R G B [off|solid|blink_slow|blink_fast]", Role.HOST, _led),
    "tone": _Verb("tone HZ MS [REPEAT]", Role.HOST, _tone),
    "haptic": _Verb("haptic PATTERN MS", Role.HOST, _haptic),
    "display": _Verb('display [TEXT | "TEXT"]', Role.HOST, _display),
    "wait": _Verb("wait SECONDS", None, _wait),
    "help": _Verb("help", None, _no_args(HelpCommand())),
    "quit": _Verb("quit", None, _no_args(QuitCommand())),
}
"""Every command: its usage line, which console takes it, and its parser."""


def verbs_for(side: Role) -> list[str]:
    """The commands the console of ``side`` accepts, in documentation order."""
    return [name for name, verb in VERBS.items() if verb.side in (side, None)]


def usage(side: Role) -> str:
    """One usage line per command of ``side``'s console."""
    return "\n".join(VERBS[name].usage for name in verbs_for(side))


def parse_command(line: str, side: Role) -> Command | None:
    """Parse one console line for ``side``; None for a blank line or a comment.

    Raises ``CommandError`` naming the problem and the valid forms.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    name, _, rest = text.partition(" ")
    name = name.lower()
    names = verbs_for(side)
    verb = VERBS.get(name)
    if verb is None:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CommandError(f"unknown command {name!r}{hint}; commands: {', '.join(names)}")
    if verb.side not in (side, None):
        where = "bwc-sim bench (the host console)" if verb.side is Role.HOST else "the MCU"
        raise CommandError(f"{name} is for {where}, not this console; commands: {', '.join(names)}")
    try:
        return verb.parse(rest.split(), rest)
    except CommandError as exc:
        raise CommandError(f"{name}: {exc}; usage: {verb.usage}") from None


# -- gestures and scenarios ---------------------------------------------------------------------


def debounced(edges: list[tuple[float, bool]], model: ButtonModel) -> list[tuple[float, bool]]:
    """The real edges of ``edges``: the first of each bounce burst (bursts end in the model's
    ``bounce_offset_s[1]``, shorter than any press or gap, so each burst is one real edge)."""
    kept: list[tuple[float, bool]] = []
    for time_s, pressed in edges:
        if not kept or time_s - kept[-1][0] > model.bounce_offset_s[1]:
            kept.append((time_s, pressed))
    return kept


def gesture_edges(
    gesture: GestureName, rng: random.Random, hold_s: float | None = None
) -> list[tuple[float, bool]]:
    """Debounced edges of a gesture as offsets in seconds from now (human timing from ``rng``)."""
    if gesture == "hold" and hold_s is not None:
        return [(0.0, True), (hold_s, False)]
    return debounced(edges_for(gesture, 0.0, rng, NO_BOUNCE), NO_BOUNCE)


@dataclass(frozen=True, slots=True)
class TimedInput:
    """An input to send ``at_s`` seconds after the scenario starts; ``t_ms`` is set when sent."""

    at_s: float
    message: SerialMessage


def plan_scenario(scenario: Scenario, *, taser_triggers: bool = False) -> list[TimedInput]:
    """The scenario's hardware actions as MCU inputs, in time order (ties in timeline order).

    Hardware actions are those ``sim.sensor_schedule`` leaves to hardware: ``button``, ``input``
    and ``speed``. ``taser_triggers`` adds ``trigger`` actions of kind ``taser_trigger`` and
    ``taser_arc`` as TASER frames; off by default because the camera's own scenario runner plays
    ``trigger`` actions itself, so a host playing the same file would see them twice.
    """
    if scenario.fleet is not None:
        raise ConfigError(
            "this scenario declares a fleet of cameras; a bench microcontroller plays one camera's"
            " hardware (use a single-camera scenario)"
        )
    planned: list[TimedInput] = []
    sensor_actions = 0
    for entry in scenario.timeline:
        action = entry.params
        if isinstance(action, ButtonAction | Input | Speed | Imu | Audio | Gps):
            seed = derive_seed(scenario.device.seed, "sensor", sensor_actions)
            sensor_actions += 1
            planned += _inputs_of(entry.at_s, action, seed)
        elif taser_triggers and isinstance(action, TriggerAction) and action.kind in _TASER_TRIGGER:
            planned.append(TimedInput(entry.at_s, Taser(0, _TASER_TRIGGER[action.kind])))
    return sorted(planned, key=lambda timed: timed.at_s)


_TASER_TRIGGER: Final = {"taser_trigger": TaserEvent.TRIGGER, "taser_arc": TaserEvent.ARC}


def _inputs_of(
    at_s: float, action: ButtonAction | Input | Speed | Imu | Audio | Gps, seed: int
) -> list[TimedInput]:
    match action:
        case ButtonAction(gesture=gesture, bounce=bounce):
            model = DEFAULT_MODEL if bounce else NO_BOUNCE
            edges = debounced(edges_for(gesture, at_s, random.Random(seed), model), model)
            return [TimedInput(t, ButtonEdge(0, Button.EVENT, pressed)) for t, pressed in edges]
        case Input(line=line, level=level, glitch_s=glitch_s):
            if 0 < glitch_s < MCU_LINE_DEBOUNCE_S:
                return []
            timed = [TimedInput(at_s, line_message(line, level))]
            if glitch_s > 0:
                timed.append(TimedInput(at_s + glitch_s, line_message(line, not level)))
            return timed
        case Speed(kmh=kmh):
            return [TimedInput(at_s, VehicleInput(0, VehicleInputKind.SPEED, round(kmh)))]
        case _:
            # IMU, audio and GPS: this bench MCU has no such sensors (no capability bits).
            return []


def line_message(line: str, level: bool) -> SerialMessage:
    """The input message of a scenario input line (``sim.scenario_timeline.InputLine``)."""
    if line == "holster":
        return Holster(0, level)
    if line == "taser_armed":
        return Taser(0, TaserEvent.ARMED if level else TaserEvent.SAFE)
    if line in _VEHICLE:
        return VehicleInput(0, _VEHICLE[line], int(level))
    raise ValueError(f"unknown input line {line!r}")
