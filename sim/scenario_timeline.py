"""The scenario timeline: what happens to the camera, and when, in virtual time.

Each action is a frozen dataclass whose fields are its parameters in the file, checked against
their annotations (``device.tomlfields``). Adding an action: write its dataclass here and add
it to the ``Action`` union; parsing, the error messages and ``ACTIONS`` follow. A runner
dispatches with ``match entry.params: case Hold(reason=reason): ...`` and ``assert_never``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, Literal, TypeAlias, get_args

from device.errors import ConfigError
from device.tomlfields import (
    Bounds,
    Document,
    Label,
    TimeSyntax,
    build,
    check_fields,
    describe,
    format_time,
    unknown,
)
from device.tomllines import Path
from device.triggers import LEVEL_KINDS
from sim.fleet_spec import resolve_cameras

ClockSetSource = Literal["sync", "gps", "manual"]
"""Where a ``set_clock`` learns UTC from (``protocol.vocabulary.ClockSource`` minus "unset")."""

MAX_CATEGORIES: Final = 20

MAX_DURATION_S: Final = 7 * 24 * 3600.0
"""The longest scenario: a week of virtual time."""


@dataclass(frozen=True, slots=True)
class PowerOn:
    """The camera boots (recovering anything a power loss left open) and starts buffering."""

    name: ClassVar[str] = "power_on"


@dataclass(frozen=True, slots=True)
class PowerOff:
    """Clean shutdown: a recording in progress is stopped and closed, then the camera is off."""

    name: ClassVar[str] = "power_off"


@dataclass(frozen=True, slots=True)
class PowerLoss:
    """The camera dies at once: nothing is closed or flushed; the next ``power_on`` recovers."""

    name: ClassVar[str] = "power_loss"


@dataclass(frozen=True, slots=True)
class DoublePress:
    """Double press of Event: start recording. ``source``: who or what pressed (a label)."""

    name: ClassVar[str] = "double_press"
    source: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Hold:
    """Event held 3 s: stop recording. ``reason``: the reason stated before stopping."""

    name: ClassVar[str] = "hold"
    reason: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Press:
    """Single press of Event: a marker in the recording in progress, with an optional note."""

    name: ClassVar[str] = "press"
    note: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Sleep:
    """Enter sleep mode: no buffer, triggers ignored."""

    name: ClassVar[str] = "sleep"


@dataclass(frozen=True, slots=True)
class Wake:
    """Leave sleep mode: buffer again."""

    name: ClassVar[str] = "wake"


@dataclass(frozen=True, slots=True)
class Categorize:
    """Categories and/or a case ID for the recording in progress, or else the last one."""

    name: ClassVar[str] = "categorize"
    categories: Annotated[tuple[Label, ...], Bounds(0, MAX_CATEGORIES)] = ()
    case_id: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)
        if not self.categories and self.case_id is None:
            raise ConfigError("categorize needs categories, a case_id, or both")


@dataclass(frozen=True, slots=True)
class SetClock:
    """The camera's clock is set now to ``utc`` (an aware datetime, kept in UTC)."""

    name: ClassVar[str] = "set_clock"
    utc: dt.datetime
    source: ClockSetSource = "sync"

    def __post_init__(self) -> None:
        check_fields(self, self.name)


SensorTriggerKind = Literal[
    "holster",
    "vehicle_lightbar",
    "vehicle_siren",
    "vehicle_door",
    "vehicle_speed",
    "taser_armed",
    "taser_trigger",
    "taser_arc",
    "gunshot",
    "foot_pursuit",
    "officer_down",
    "geofence",
]
"""Trigger kinds a ``trigger`` action injects as if the input (or its detector) had fired."""

ModeName = Literal["sleep", "mute", "stealth"]


@dataclass(frozen=True, slots=True)
class TriggerAction:
    """A sensor or vehicle trigger fires (``active`` true) or a level trigger is released.

    ``name`` tells level triggers of one kind apart (the geofence's name).
    """

    name: ClassVar[str] = "trigger"
    kind: SensorTriggerKind
    active: bool = True
    source: Label | None = None
    input: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)
        level = self.kind in LEVEL_KINDS
        if not self.active and not level:
            raise ConfigError(
                f"trigger.active: {self.kind} is an instant trigger: it has no release"
            )


@dataclass(frozen=True, slots=True)
class RemoteActivate:
    """Dispatch (or the backend) commands the camera to record."""

    name: ClassVar[str] = "remote_activate"
    source: Label = "dispatch"

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class RemoteDeactivate:
    """Dispatch (or the backend) commands the camera to stop, with the required reason."""

    name: ClassVar[str] = "remote_deactivate"
    reason: Label
    source: Label = "dispatch"

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class PeerActivation:
    """A camera of the group, ``distance_m`` away, broadcasts that it started recording."""

    name: ClassVar[str] = "peer_activation"
    peer: Label
    distance_m: Annotated[float, Bounds(0, 100_000)] = 3.0
    master: bool = True

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class PeerDeactivation:
    """A camera of the group broadcasts that it stopped its group recording."""

    name: ClassVar[str] = "peer_deactivation"
    peer: Label
    reason: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class SetModeAction:
    """The officer switches a mode on or off (``sleep`` is the same as the sleep/wake actions)."""

    name: ClassVar[str] = "mode"
    mode: ModeName
    enabled: bool = True

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Activity:
    """What the officer is doing from ``at`` for ``duration``: ground truth for compliance.

    ``context`` is matched against the policy's covered activities (must be recorded) and
    prohibited contexts (must not be).
    """

    name: ClassVar[str] = "activity"
    context: Label
    duration: Annotated[float, Bounds(1, 7 * 24 * 3600), TimeSyntax()]

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Upload:
    """The camera docks and uploads everything closed so far at ``bandwidth_mbps``.

    Most urgent first (critical-incident categories, then oldest); the report gives each
    recording the virtual time its last byte was verified, for the critical-upload deadline.
    """

    name: ClassVar[str] = "upload"
    bandwidth_mbps: Annotated[float, Bounds(0.1, 10_000)] = 25.0

    def __post_init__(self) -> None:
        check_fields(self, self.name)


ButtonGesture = Literal["double_press", "hold", "press"]
InputLine = Literal["holster", "lightbar", "siren", "door", "taser_armed"]
ImuEpisodeName = Literal[
    "standing", "walking", "running", "fall", "jump", "sit_hard", "stumble", "vehicle_entry"
]
AudioClipName = Literal["gunshot", "door_slam", "ambient"]
LatLonPair = Annotated[tuple[float, ...], Bounds(2, 2)]


@dataclass(frozen=True, slots=True)
class Button:
    """The Event button pressed by a hand: raw edges with human timing and contact bounce.

    Goes through the camera's debouncing and gesture recognition, unlike ``double_press``,
    ``hold`` and ``press``, which hand the camera the recognised gesture. ``reason``: what the
    officer says before a hold.
    """

    name: ClassVar[str] = "button"
    gesture: ButtonGesture
    bounce: bool = True
    reason: Label | None = None

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Input:
    """An input line changes level (debounced by the camera): holster drawn, lightbar on..."""

    name: ClassVar[str] = "input"
    line: InputLine
    level: bool = True
    glitch_s: Annotated[float, Bounds(0, 1)] = 0.0

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Speed:
    """The vehicle reports its speed (km/h); held over the threshold, it is a trigger."""

    name: ClassVar[str] = "speed"
    kmh: Annotated[float, Bounds(0, 400)]

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Imu:
    """The officer moves: a generated IMU episode (100 Hz) is fed to the camera's detectors."""

    name: ClassVar[str] = "imu"
    episode: ImuEpisodeName

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Audio:
    """A sound: a generated audio clip (16 kHz) is fed to the gunshot detector."""

    name: ClassVar[str] = "audio"
    clip: AudioClipName

    def __post_init__(self) -> None:
        check_fields(self, self.name)


@dataclass(frozen=True, slots=True)
class Gps:
    """The officer moves along ``route`` (``[latitude, longitude]`` points); fixes every second.

    ``loss_s``: seconds without a fix, from the start of the route. Geofences are in the policy.
    """

    name: ClassVar[str] = "gps"
    route: Annotated[tuple[LatLonPair, ...], Bounds(2, 1000)]
    speed_mps: Annotated[float, Bounds(0.1, 70)] = 1.4
    jitter_m: Annotated[float, Bounds(0, 100)] = 3.0
    loss_s: Annotated[tuple[Annotated[tuple[float, ...], Bounds(2, 2)], ...], Bounds(0, 100)] = ()

    def __post_init__(self) -> None:
        check_fields(self, self.name)


Action: TypeAlias = (
    PowerOn
    | PowerOff
    | PowerLoss
    | DoublePress
    | Hold
    | Press
    | Sleep
    | Wake
    | Categorize
    | SetClock
    | TriggerAction
    | RemoteActivate
    | RemoteDeactivate
    | PeerActivation
    | PeerDeactivation
    | SetModeAction
    | Activity
    | Upload
    | Button
    | Input
    | Speed
    | Imu
    | Audio
    | Gps
)
"""Every timeline action; a runner's ``match`` over it is checked for exhaustiveness by mypy."""

ACTIONS: Final[Mapping[str, type[Action]]] = MappingProxyType(
    {cls.name: cls for cls in get_args(Action)}
)
"""Action classes by their name in the file (``do = "..."``), in documentation order."""

_ENTRY_KEYS: Final = ("at", "do")
_CAMERA_KEY: Final = "camera"
_NOT_A_FLEET: Final = (
    "only the entries of a fleet scenario name a camera; add a [fleet] table to run several"
)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One timeline step: at ``at_s`` seconds of virtual time, ``params`` happens.

    ``action`` is the action's name (``params.name``); ``line`` is the line of its
    ``[[timeline]]`` header, for messages about it. ``cameras``: in a fleet scenario, the IDs of
    the cameras it happens to (``camera = ...``); None means every camera (and is all a
    single-camera scenario has).
    """

    at_s: float
    action: str
    params: Action
    line: int
    cameras: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.action != self.params.name:
            raise ConfigError(f"TimelineEntry.action {self.action!r} != {self.params.name!r}")
        if self.cameras is not None and not self.cameras:
            raise ConfigError("TimelineEntry.cameras names no camera (None means every camera)")

    def applies_to(self, camera: str) -> bool:
        """Whether this entry happens to ``camera`` (of a fleet)."""
        return self.cameras is None or camera in self.cameras


def parameters(action: str) -> tuple[str, ...]:
    """The keys an entry with ``do = action`` may have, ``at`` and ``do`` first."""
    return (*_ENTRY_KEYS, *(f.name for f in fields(ACTIONS[action])))


def parse_timeline(
    doc: Document, value: object, duration_s: float, cameras: Sequence[str] | None = None
) -> tuple[TimelineEntry, ...]:
    """The ``[[timeline]]`` entries, checked, sorted by time (file order among equal times).

    ``cameras``: the IDs of a fleet scenario's cameras, which entries may name with ``camera``;
    None for a single-camera scenario, whose entries may not.
    """
    if not isinstance(value, list):
        raise doc.error(("timeline",), f"must be [[timeline]] tables, got {describe(value)}")
    entries = [_entry(doc, index, item, duration_s, cameras) for index, item in enumerate(value)]
    return tuple(sorted(entries, key=lambda entry: entry.at_s))


def _entry(
    doc: Document, index: int, item: object, duration_s: float, cameras: Sequence[str] | None
) -> TimelineEntry:
    path = ("timeline", index)
    table = doc.table(path, item)
    action = _action_name(doc, path, table)
    at_s = _at(doc, path, table, duration_s)
    allowed = parameters(action) if cameras is None else (*parameters(action), _CAMERA_KEY)
    for key in table:
        if key == _CAMERA_KEY and cameras is None:
            raise doc.error((*path, key), _NOT_A_FLEET)
        if key not in allowed:
            raise doc.error((*path, key), unknown(key, list(allowed), f"{action} parameter"))
    given = {key: value for key, value in table.items() if key not in (*_ENTRY_KEYS, _CAMERA_KEY)}
    params = build(doc, path, ACTIONS[action], given)
    targets = None
    if cameras is not None and _CAMERA_KEY in table:
        targets = resolve_cameras(doc, (*path, _CAMERA_KEY), table[_CAMERA_KEY], cameras)
    return TimelineEntry(at_s, action, params, doc.line(path), targets)


def _action_name(doc: Document, path: Path, table: dict[str, object]) -> str:
    names = list(ACTIONS)
    if "do" not in table:
        raise doc.error((*path, "do"), f"missing; expected one of {', '.join(names)}")
    action = table["do"]
    if not isinstance(action, str):
        reason = f"must be an action name, one of {', '.join(names)}, got {describe(action)}"
        raise doc.error((*path, "do"), reason)
    if action not in ACTIONS:
        raise doc.error((*path, "do"), unknown(action, names, "action"))
    return action


def _at(doc: Document, path: Path, table: dict[str, object], duration_s: float) -> float:
    if "at" not in table:
        raise doc.error((*path, "at"), 'missing; expected a time such as "00:05:00"')
    at_s = doc.time((*path, "at"), table["at"])
    if at_s > duration_s:
        end = format_time(duration_s)
        raise doc.error(
            (*path, "at"), f"{format_time(at_s)} is after the end (scenario.duration {end})"
        )
    return at_s
