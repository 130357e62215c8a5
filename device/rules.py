"""The agency's rules beyond buffering: which triggers start a recording, who may stop one, modes,
reminders, categories, peers and what the compliance report checks.

Each table of a policy file (``[triggers.KIND]``, ``[stop]``, ``[modes]``, ``[categories]``,
``[peer]``, ``[compliance]``, ``[[geofences]]``) is one frozen dataclass here; the field
annotations are the file's types and ranges (``device.tomlfields``). ``docs/policy.md`` documents
every field; ``policies/default.toml`` is the default written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Final

from device.errors import ConfigError
from device.tomlfields import Bounds, Label, check_fields
from device.triggers import CONFIGURABLE_KINDS
from protocol.vocabulary import TriggerKind

Window = Annotated[float, Bounds(0, 600)]
"""A window or delay in seconds, 0 to 10 minutes."""


@dataclass(frozen=True, slots=True)
class TriggerRule:
    """What one trigger kind may do.

    ``debounce_s``: the same trigger firing again within this many seconds of its last firing is
    ignored (and audited as such). ``cancel_window_s``: a recording this trigger started can be
    cancelled by a hold within the window, without a reason or confirmation (gunshot: 20 s).
    ``confirm_stop``: a recording this trigger started stops on a hold only after a confirming
    press (``stop.confirm_window_s``).
    """

    enabled: bool = True
    debounce_s: Window = 0.0
    cancel_window_s: Window = 0.0
    confirm_stop: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "trigger")


def _automatic(
    debounce_s: float = 1.0, *, enabled: bool = True, cancel_window_s: float = 0.0
) -> TriggerRule:
    return TriggerRule(
        enabled=enabled, debounce_s=debounce_s, cancel_window_s=cancel_window_s, confirm_stop=True
    )


DEFAULT_TRIGGER_RULES: Final[Mapping[TriggerKind, TriggerRule]] = MappingProxyType(
    {
        "button": TriggerRule(),
        "holster": _automatic(),
        "vehicle_lightbar": _automatic(),
        "vehicle_siren": _automatic(),
        "vehicle_door": _automatic(enabled=False),
        "vehicle_speed": _automatic(enabled=False),
        "taser_armed": _automatic(),
        "taser_trigger": _automatic(),
        "taser_arc": _automatic(),
        "gunshot": _automatic(2.0, cancel_window_s=20.0),
        "foot_pursuit": _automatic(5.0),
        "officer_down": _automatic(5.0),
        "geofence": _automatic(10.0, enabled=False),
        "remote": TriggerRule(),
        "peer": TriggerRule(debounce_s=1.0),
    }
)
"""Defaults per trigger kind: door, speed and geofence are off until an agency turns them on."""
assert tuple(DEFAULT_TRIGGER_RULES) == CONFIGURABLE_KINDS


@dataclass(frozen=True, slots=True)
class StopRules:
    """Who may stop a recording, and how.

    ``reason_required``: a stop without a stated reason is still carried out (a camera cannot
    make an officer speak) but is audited and reported as a compliance finding.
    ``remote_may_stop_local``: whether a remote command may stop a recording started on the
    camera (a press) or while a level trigger is still asserted. ``members_may_stop_group``:
    whether a camera that joined a group recording may stop it itself (otherwise only the group
    master's stop does).
    """

    reason_required: bool = True
    confirm_window_s: Annotated[float, Bounds(1, 60)] = 5.0
    remote_may_stop_local: bool = False
    members_may_stop_group: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "stop")


@dataclass(frozen=True, slots=True)
class ModeRules:
    """Which modes an officer may switch on, and the reminders. A reminder of 0 is off."""

    sleep_allowed: bool = True
    mute_allowed: bool = True
    stealth_allowed: bool = True
    recording_reminder_s: Annotated[float, Bounds(0, 3600)] = 120.0
    sleep_reminder_s: Annotated[float, Bounds(0, 86400)] = 900.0

    def __post_init__(self) -> None:
        check_fields(self, "modes")


DEFAULT_CRITICAL: Final = (
    "officer involved shooting",
    "use of deadly force",
    "death in custody",
    "serious injury",
)


@dataclass(frozen=True, slots=True)
class CategoryRules:
    """The category prompt after a stop, and the critical-incident categories.

    A recording given a ``critical`` category must be uploaded (verified by the backend) within
    ``critical_upload_deadline_s`` of its stop, and goes to the front of the upload queue.
    """

    prompt: bool = True
    prompt_timeout_s: Annotated[float, Bounds(1, 600)] = 8.0
    default: Label = "uncategorized"
    critical: Annotated[tuple[Label, ...], Bounds(0, 50)] = DEFAULT_CRITICAL
    critical_upload_deadline_s: Annotated[float, Bounds(60, 7 * 86400)] = 3600.0

    def __post_init__(self) -> None:
        check_fields(self, "categories")

    def is_critical(self, categories: tuple[str, ...]) -> bool:
        """Whether any of ``categories`` is a critical-incident category (case-insensitive)."""
        critical = {name.casefold() for name in self.critical}
        return any(name.casefold() in critical for name in categories)


@dataclass(frozen=True, slots=True)
class PeerRules:
    """Group activation: cameras within ``range_m`` of one that starts recording start too.

    ``range_m`` defaults to about 30 ft; ``broadcast`` is whether this camera tells its group when
    it starts recording.
    """

    range_m: Annotated[float, Bounds(0, 10_000)] = 9.1
    broadcast: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "peer")


COVERED_ACTIVITIES: Final = (
    "arrest",
    "search",
    "detention",
    "frisk",
    "warrant",
    "subpoena",
    "removal",
    "facility protection",
    "disturbance",
    "emergency",
    "traffic stop",
    "pursuit",
    "use of force",
)


@dataclass(frozen=True, slots=True)
class ComplianceRules:
    """What the compliance report checks.

    ``min_pre_roll_s``: delivered pre-roll shorter than this, less ``pre_roll_tolerance_s`` for
    keyframe rounding, is a late activation (None: the configured ``pre_event_s``).
    ``activation_grace_s``: how long after a covered activity's first trigger the recorded media
    may begin. ``covered`` activities must be recorded; ``prohibited`` contexts must not be (e.g.
    solely First Amendment activity).
    """

    min_pre_roll_s: Annotated[float, Bounds(0, 120)] | None = None
    pre_roll_tolerance_s: Annotated[float, Bounds(0, 10)] = 0.5
    activation_grace_s: Window = 0.0
    covered: Annotated[tuple[Label, ...], Bounds(0, 100)] = COVERED_ACTIVITIES
    prohibited: Annotated[tuple[Label, ...], Bounds(0, 100)] = ("first amendment",)

    def __post_init__(self) -> None:
        check_fields(self, "compliance")
        overlap = {c.casefold() for c in self.covered} & {p.casefold() for p in self.prohibited}
        if overlap:
            raise ConfigError(
                f"compliance.prohibited names {sorted(overlap)}, which covered also lists"
            )


LatLon = Annotated[tuple[float, ...], Bounds(2, 2)]


@dataclass(frozen=True, slots=True)
class GeofenceRule:
    """A named polygon of ``[latitude, longitude]`` vertices; entering it is a trigger."""

    name: Label
    polygon: Annotated[tuple[LatLon, ...], Bounds(3, 1000)]

    def __post_init__(self) -> None:
        check_fields(self, "geofence")
        for lat, lon in self.polygon:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ConfigError(
                    f"geofence.polygon vertex [{lat}, {lon}] is not a [latitude, longitude] pair"
                )


@dataclass(frozen=True, slots=True)
class PolicyRules:
    """Every rule beyond buffering, as one frozen object."""

    triggers: Mapping[TriggerKind, TriggerRule] = field(
        default_factory=lambda: DEFAULT_TRIGGER_RULES
    )
    stop: StopRules = StopRules()
    modes: ModeRules = ModeRules()
    categories: CategoryRules = CategoryRules()
    peer: PeerRules = PeerRules()
    compliance: ComplianceRules = ComplianceRules()
    geofences: tuple[GeofenceRule, ...] = ()

    def __post_init__(self) -> None:
        # Frozen all the way down: a policy is read once and never changes under the camera.
        object.__setattr__(self, "triggers", MappingProxyType(dict(self.triggers)))
        missing = [kind for kind in CONFIGURABLE_KINDS if kind not in self.triggers]
        if missing:
            raise ConfigError(f"triggers: no rule for {', '.join(missing)}")
        names = [fence.name for fence in self.geofences]
        if len(names) != len(set(names)):
            raise ConfigError("geofences: two geofences have the same name")

    def rule(self, kind: TriggerKind) -> TriggerRule:
        """The rule for ``kind``; kinds a policy cannot configure (power, storage) are enabled."""
        return self.triggers.get(kind, _INTERNAL)


_INTERNAL: Final = TriggerRule()
