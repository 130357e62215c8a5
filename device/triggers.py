"""Activation triggers as the camera sees them: what fired, through which input, and whether it
is still asserted.

A trigger is either an instant (a double press, a gunshot, a TASER arc, a dispatch command) or a
level that stays asserted until it is released (holster drawn, lightbar on, speed over the
threshold, inside a geofence). The stop rules need the difference: a remote command may not stop
a recording while a level trigger is still asserted. ``TriggerLevels`` keeps that state and the
time each trigger last fired, for debouncing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, get_args

from device.errors import ConfigError
from protocol.common import Trigger
from protocol.vocabulary import TriggerKind


class Origin(Enum):
    """Who or what started a recording; the stop rules differ by origin."""

    MANUAL = "manual"  # the officer, on the camera (double press)
    AUTOMATIC = "automatic"  # a sensor or vehicle input
    REMOTE = "remote"  # dispatch or a backend command
    PEER = "peer"  # another camera's broadcast: a group recording


LEVEL_KINDS: Final[frozenset[TriggerKind]] = frozenset(
    {
        "holster",
        "vehicle_lightbar",
        "vehicle_siren",
        "vehicle_door",
        "vehicle_speed",
        "taser_armed",
        "foot_pursuit",
        "geofence",
    }
)
"""Triggers that stay asserted until released (``active=False``)."""

DEVICE_KINDS: Final[frozenset[str]] = frozenset(
    {"scenario", "policy", "power", "storage", "battery", "recovery"}
)
"""Trigger kinds the device itself raises (its rules, power, storage); no policy governs them."""

CONFIGURABLE_KINDS: Final[tuple[TriggerKind, ...]] = tuple(
    kind for kind in get_args(TriggerKind) if kind not in DEVICE_KINDS
)
"""Trigger kinds a policy can enable, debounce and give a cancel window (``[triggers.KIND]``)."""

_ORIGINS: Final[dict[str, Origin]] = {
    "button": Origin.MANUAL,
    "remote": Origin.REMOTE,
    "peer": Origin.PEER,
}


def origin_of(kind: TriggerKind) -> Origin:
    """The origin of a recording that ``kind`` starts."""
    return _ORIGINS.get(kind, Origin.AUTOMATIC)


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """One trigger reaching the camera.

    ``active`` is False when a level trigger is released (holster re-holstered, lightbar off);
    instants are always active. ``peer`` names the camera that broadcast a peer activation,
    ``group_master`` whether it is the master of that group recording, and ``distance_m`` how far
    away it is (from the two cameras' positions) when known. ``name`` tells level
    triggers of one kind apart (which geofence).
    """

    kind: TriggerKind
    source: str
    active: bool = True
    hw_time_ms: int | None = None
    name: str = ""
    peer: str | None = None
    group_master: bool = False
    distance_m: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(TriggerKind):
            raise ConfigError(f"trigger kind {self.kind!r} is not one of {get_args(TriggerKind)}")
        if not self.source or len(self.source) > 200:
            raise ConfigError("trigger source must be 1-200 characters")
        if not self.active and self.kind not in LEVEL_KINDS:
            raise ConfigError(f"{self.kind} is an instant trigger: it cannot be released")
        if self.kind == "peer" and not self.peer:
            raise ConfigError("a peer trigger names the peer camera that broadcast it")

    @property
    def level_key(self) -> tuple[str, str]:
        """Identifies one level input: its kind and name (two geofences are two levels)."""
        return (self.kind, self.name)

    @property
    def label(self) -> str:
        """The trigger for messages: ``geofence:courthouse``, ``holster``."""
        return f"{self.kind}:{self.name}" if self.name else self.kind

    def wire(self) -> Trigger:
        """The trigger as it appears in events and manifests."""
        return Trigger(kind=self.kind, source=self.source, hw_time_ms=self.hw_time_ms)


class TriggerLevels:
    """Which level triggers are asserted now, and when each trigger last fired."""

    def __init__(self) -> None:
        self._asserted: dict[tuple[str, str], float] = {}
        self._last_fired: dict[tuple[str, str], float] = {}

    def seconds_since_fired(self, event: TriggerEvent, now: float) -> float | None:
        """Seconds since ``event``'s trigger last fired (asserted), or None if never."""
        last = self._last_fired.get(event.level_key)
        return None if last is None else now - last

    def fired(self, event: TriggerEvent, now: float, *, asserts: bool) -> None:
        """``event`` fired now; ``asserts``: a level trigger the policy honours is now asserted.

        Every firing counts for debouncing, ignored ones included, so a chattering input stays
        ignored until it has been quiet for the debounce time.
        """
        self._last_fired[event.level_key] = now
        if asserts and event.kind in LEVEL_KINDS:
            self._asserted.setdefault(event.level_key, now)

    def released(self, event: TriggerEvent) -> bool:
        """A level was released; False if it was not asserted."""
        return self._asserted.pop(event.level_key, None) is not None

    def is_asserted(self, kind: str, name: str = "") -> bool:
        """Whether the level trigger ``kind`` (``name``) is asserted now."""
        return (kind, name) in self._asserted

    def asserted(self) -> list[str]:
        """The asserted level triggers, as labels, in the order they were asserted."""
        ordered = sorted(self._asserted.items(), key=lambda item: item[1])
        return [f"{kind}:{name}" if name else kind for (kind, name), _ in ordered]

    def clear(self) -> None:
        """Forget every level (power off: inputs are read afresh at the next boot)."""
        self._asserted.clear()
        self._last_fired.clear()
