"""Scenario files: a device, its seed, policy, media, battery and a timeline, in TOML.

``load_scenario(path)`` / ``parse_scenario(text, source)`` return a frozen ``Scenario`` that the
virtual-time runner consumes, or raise one ``ConfigFileError`` whose message names the file, the
line, the field and what was expected. Parsing is strict: unknown tables and keys, wrong types
and out-of-range values are all errors. The format is documented in ``docs/scenarios.md``.

A ``[fleet]`` table (``sim.fleet_spec``) makes it a fleet's: several cameras sharing the policy,
media and battery, whose timeline entries may name the cameras they happen to.
``Scenario.camera_scenarios`` splits it into one single-camera scenario per camera, which is what
``sim.fleet_run.FleetRun`` plays.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from device.battery import BatteryConfig
from device.errors import ConfigError
from device.policy import Durability, RecordingPolicy
from device.policyfile import AgencyPolicy, load_policy, read_policy
from device.rules import PolicyRules
from device.tomlfields import (
    ConfigFileError,
    Document,
    Label,
    build,
    describe,
    format_time,
    parse_document,
    parse_time,
    read_text,
    unknown,
)
from device.validate import check_bool, check_number
from protocol.ids import is_safe_id
from protocol.vocabulary import ClockSource
from sim.fleet_spec import Fleet, FleetDevice, parse_fleet
from sim.media import VIDEO_PRESETS, AudioProfile, VideoProfile
from sim.scenario_timeline import (
    ACTIONS,
    MAX_DURATION_S,
    Action,
    Categorize,
    DoublePress,
    Hold,
    PowerLoss,
    PowerOff,
    PowerOn,
    Press,
    SetClock,
    Sleep,
    TimelineEntry,
    Wake,
    parse_timeline,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_EPOCH_UTC",
    "DEFAULT_VIDEO_PRESET",
    "MAX_DURATION_S",
    "Action",
    "Categorize",
    "ConfigFileError",
    "DeviceSpec",
    "DoublePress",
    "Fleet",
    "FleetDevice",
    "Hold",
    "PowerLoss",
    "PowerOff",
    "PowerOn",
    "Press",
    "Scenario",
    "SetClock",
    "Sleep",
    "TimelineEntry",
    "Wake",
    "format_time",
    "load_scenario",
    "parse_scenario",
    "parse_time",
]

DEFAULT_EPOCH_UTC: Final = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""UTC at t = 0 when ``device.epoch_utc`` is not given (fixed, so runs stay reproducible)."""

DEFAULT_VIDEO_PRESET: Final = "720p30"

SECTIONS: Final = ("scenario", "device", "policy", "media", "battery", "timeline")
FLEET: Final = "fleet"
"""The table that makes a scenario a fleet's (``sim.fleet_spec``)."""
_AUDIO_KEYS: Final = {
    "audio": "enabled",
    "audio_bitrate_bps": "bitrate_bps",
    "audio_frame_s": "frame_duration_s",
}
_VIDEO_KEYS: Final = tuple(f.name for f in fields(VideoProfile))


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """The simulated camera: its ID, the seed of everything random, and its clock at t = 0.

    ``epoch_utc`` is what the camera's clock reads at t = 0 (aware, kept in UTC); ``clock_set``
    false means it was never set (``clock_source`` "unset") and timestamps say so.
    """

    id: str
    seed: int
    epoch_utc: dt.datetime = DEFAULT_EPOCH_UTC
    clock_set: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not is_safe_id(self.id):
            raise ConfigError(
                "device.id must be 1-64 characters from A-Z a-z 0-9 _ . -, starting with a "
                f"letter or digit, got {self.id!r}"
            )
        check_number("device", "seed", self.seed, 0, 2**63 - 1, integer=True)
        if not isinstance(self.epoch_utc, dt.datetime) or self.epoch_utc.tzinfo is None:
            raise ConfigError(f"device.epoch_utc must be an aware datetime, got {self.epoch_utc!r}")
        check_bool("device", "clock_set", self.clock_set)

    @property
    def clock_source(self) -> ClockSource:
        """The clock's source at t = 0: "sync" (set at the last dock sync) or "unset"."""
        return "sync" if self.clock_set else "unset"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario file: everything a virtual-time run needs. Times in seconds."""

    name: str
    duration_s: float
    device: DeviceSpec
    policy: RecordingPolicy
    rules: PolicyRules
    policy_name: str
    video: VideoProfile
    audio: AudioProfile
    battery: BatteryConfig
    timeline: tuple[TimelineEntry, ...]
    source: str
    fleet: Fleet | None = None

    def __post_init__(self) -> None:
        check_number("scenario", "duration_s", self.duration_s, 0.0, MAX_DURATION_S, integer=False)
        if self.duration_s <= 0:
            raise ConfigError("scenario.duration_s must be more than 0")
        times = [entry.at_s for entry in self.timeline]
        if times != sorted(times) or any(not 0 <= t <= self.duration_s for t in times):
            raise ConfigError("scenario.timeline must be sorted by at_s, within the duration")
        ids = set(() if self.fleet is None else self.fleet.ids)
        for entry in self.timeline:
            if entry.cameras is not None and not ids.issuperset(entry.cameras):
                raise ConfigError(
                    f"scenario.timeline entry at line {entry.line} names cameras that are not "
                    f"in the fleet: {sorted(set(entry.cameras) - ids)}"
                )

    def camera_scenarios(self) -> tuple[Scenario, ...]:
        """One single-camera scenario per camera: a fleet's, or this one alone.

        Each keeps the shared policy, media and battery, gets its camera's ID, seed and the
        timeline entries that happen to it, and has no fleet: a ``ScenarioRun`` plays it.
        """
        if self.fleet is None:
            return (self,)
        return tuple(
            replace(
                self,
                device=replace(self.device, id=camera.id, seed=camera.seed),
                timeline=tuple(
                    replace(entry, cameras=None)
                    for entry in self.timeline
                    if entry.applies_to(camera.id)
                ),
                fleet=None,
            )
            for camera in self.fleet.cameras
        )


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and parse the scenario file at ``path`` (UTF-8). Messages name it as given."""
    text, source = read_text(path)
    return parse_scenario(text, source)


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Parse scenario ``text``; ``source`` names it in error messages."""
    data, doc = parse_document(text, source)
    _check_sections(doc, data)
    for required in ("scenario", "device"):
        if required not in data:
            raise doc.error((required,), f"missing; add a [{required}] table")
    name, duration_s = _header(doc, doc.table(("scenario",), data["scenario"]))
    device, fleet = _devices(doc, data)
    agency = _policy(doc, _section(doc, data, "policy"), source)
    video, audio = _media(doc, _section(doc, data, "media"))
    battery = build(doc, ("battery",), BatteryConfig, _section(doc, data, "battery"))
    cameras = None if fleet is None else fleet.ids
    timeline = parse_timeline(doc, data.get("timeline", []), duration_s, cameras)
    return Scenario(
        name=name or _default_name(source),
        duration_s=duration_s,
        device=device,
        policy=agency.recording,
        rules=agency.rules,
        policy_name=agency.name,
        video=video,
        audio=audio,
        battery=battery,
        timeline=timeline,
        source=source,
        fleet=fleet,
    )


def _check_sections(doc: Document, data: dict[str, Any]) -> None:
    """Unknown tables are errors; ``[fleet]`` is named in the message only to a near miss."""
    for key in data:
        if key not in (*SECTIONS, FLEET):
            near = difflib.get_close_matches(key, [*SECTIONS, FLEET], n=1) == [FLEET]
            names = [*SECTIONS, FLEET] if near else list(SECTIONS)
            raise doc.error((key,), unknown(key, names, "table"))


def _devices(doc: Document, data: dict[str, Any]) -> tuple[DeviceSpec, Fleet | None]:
    """``[device]``, and ``[fleet]`` if there is one.

    In a fleet ``[device]`` holds what the cameras share (the root seed, the clock); the IDs come
    from ``[fleet]``, and ``device.id`` is the first camera's.
    """
    table = doc.table(("device",), data["device"])
    if FLEET not in data:
        return build(doc, ("device",), DeviceSpec, table), None
    if "id" in table:
        reason = "a fleet scenario names its cameras in [fleet] (ids, or count); remove device.id"
        raise doc.error(("device", "id"), reason)
    fleet_table = doc.table((FLEET,), data[FLEET])
    seed_only = {key: value for key, value in table.items() if key == "seed"}
    root_seed = build(doc, ("device",), DeviceSpec, seed_only, id="fleet").seed
    fleet = parse_fleet(doc, fleet_table, root_seed)
    device = build(doc, ("device",), DeviceSpec, table, id=fleet.ids[0])
    return device, fleet


def _policy(doc: Document, table: dict[str, Any], source: str) -> AgencyPolicy:
    """``[policy]``: a policy file's tables inline, over the file named by ``file`` if any.

    Scenarios run in virtual time, where the host's page cache stands in for the camera's flash,
    so durability is ``none`` unless the scenario says otherwise.
    """
    base = AgencyPolicy()
    if "file" in table:
        name = doc.convert(("policy", "file"), Label, table["file"])
        where = Path(name) if source.startswith("<") else Path(source).parent / name
        try:
            base = load_policy(where)
        except ConfigFileError as error:
            raise doc.error(("policy", "file"), f"the policy file is wrong: {error}") from error
    fixed = {} if "durability" in table else {"durability": Durability.NONE}
    policy = read_policy(doc, ("policy",), table, base, extra_keys=("file",), **fixed)
    if "name" not in table and set(table) - {"file", "durability"}:
        policy = replace(policy, name=f"{policy.name}, as the scenario changes it")
    return policy


def _section(doc: Document, data: dict[str, Any], name: str) -> dict[str, Any]:
    return doc.table((name,), data.get(name, {}))


def _header(doc: Document, table: dict[str, Any]) -> tuple[str | None, float]:
    path = ("scenario",)
    doc.check_keys(path, table, ("name", "duration"))
    if "duration" not in table:
        raise doc.error((*path, "duration"), 'missing; expected a time such as "08:00:00"')
    duration_s = doc.time((*path, "duration"), table["duration"])
    if not 0 < duration_s <= MAX_DURATION_S:
        limit = format_time(MAX_DURATION_S)
        reason = f"must be more than 0 and at most {limit}, got {describe(table['duration'])}"
        raise doc.error((*path, "duration"), reason)
    name = doc.convert((*path, "name"), Label, table["name"]) if "name" in table else None
    return name, duration_s


def _media(doc: Document, table: dict[str, Any]) -> tuple[VideoProfile, AudioProfile]:
    path = ("media",)
    doc.check_keys(path, table, ("video", *_VIDEO_KEYS, *_AUDIO_KEYS))
    preset_name = table.get("video", DEFAULT_VIDEO_PRESET)
    presets = list(VIDEO_PRESETS)
    if not isinstance(preset_name, str):
        reason = f"must be one of {', '.join(presets)}, got {describe(preset_name)}"
        raise doc.error((*path, "video"), reason)
    if preset_name not in VIDEO_PRESETS:
        raise doc.error((*path, "video"), unknown(preset_name, presets, "video preset"))
    overrides = {key: value for key, value in table.items() if key in _VIDEO_KEYS}
    make = functools.partial(replace, VIDEO_PRESETS[preset_name])
    video = build(doc, path, VideoProfile, overrides, make=make)
    audio_given = {key: value for key, value in table.items() if key in _AUDIO_KEYS}
    audio = build(doc, path, AudioProfile, audio_given, keys=_AUDIO_KEYS)
    return video, audio


def _default_name(source: str) -> str:
    return "scenario" if source.startswith("<") else Path(source).stem or "scenario"
