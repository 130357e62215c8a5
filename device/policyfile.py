"""Agency policy files: the recording policy and the rules, read from TOML once, at start-up.

A policy file has the buffering and storage keys of ``RecordingPolicy`` at its top level, a
``name``, and the rule tables of ``device.rules``. Anything not written takes its default, so
the smallest policy file is empty. ``policies/default.toml`` writes every default out; the format
is documented in ``docs/policy.md``. Errors name the file, the line and the field.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final, TypeVar, cast

from device.errors import ConfigError
from device.policy import RecordingPolicy
from device.rules import (
    CategoryRules,
    ComplianceRules,
    GeofenceRule,
    ModeRules,
    PeerRules,
    PolicyRules,
    StopRules,
    TriggerRule,
)
from device.tomlfields import Document, Label, build, describe, parse_document, read_text, unknown
from device.tomllines import Path
from device.triggers import CONFIGURABLE_KINDS
from protocol.vocabulary import TriggerKind

T = TypeVar("T")

RECORDING_KEYS: Final = tuple(f.name for f in fields(RecordingPolicy))
_SECTIONS: Final[dict[str, type]] = {
    "stop": StopRules,
    "modes": ModeRules,
    "categories": CategoryRules,
    "peer": PeerRules,
    "compliance": ComplianceRules,
}
POLICY_KEYS: Final = ("name", *RECORDING_KEYS, "triggers", *_SECTIONS, "geofences")


@dataclass(frozen=True, slots=True)
class AgencyPolicy:
    """A whole policy: its name, how the camera buffers and records, and the rules."""

    name: str = "default"
    recording: RecordingPolicy = field(default_factory=RecordingPolicy)
    rules: PolicyRules = field(default_factory=PolicyRules)


def load_policy(path: str | os.PathLike[str]) -> AgencyPolicy:
    """Read and check the policy file at ``path``."""
    text, source = read_text(path)
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "<string>") -> AgencyPolicy:
    """Parse policy ``text``; ``source`` names it in error messages."""
    data, doc = parse_document(text, source)
    return read_policy(doc, (), data, AgencyPolicy())


def read_policy(
    doc: Document,
    path: Path,
    table: dict[str, Any],
    base: AgencyPolicy,
    *,
    extra_keys: tuple[str, ...] = (),
    **recording_fixed: object,
) -> AgencyPolicy:
    """Read a policy table at ``path`` of ``doc`` over ``base``: what it writes replaces base's.

    ``extra_keys`` are keys the caller handles (a scenario's ``file``); ``recording_fixed`` are
    ``RecordingPolicy`` fields the caller sets (a scenario's durability).
    """
    doc.check_keys(path, table, (*POLICY_KEYS, *extra_keys))
    name = base.name
    if "name" in table:
        name = doc.convert((*path, "name"), Label, table["name"])
    recording_given = {key: value for key, value in table.items() if key in RECORDING_KEYS}
    recording = build(
        doc,
        path,
        RecordingPolicy,
        recording_given,
        keys={key: key for key in RECORDING_KEYS},
        make=_over(base.recording),
        **recording_fixed,
    )
    rules = base.rules
    sections = {
        key: build(
            doc,
            (*path, key),
            cls,
            doc.table((*path, key), table[key]),
            make=_over(getattr(rules, key)),
        )
        for key, cls in _SECTIONS.items()
        if key in table
    }
    triggers = rules.triggers
    if "triggers" in table:
        triggers = _triggers(doc, (*path, "triggers"), table["triggers"], triggers)
    geofences = rules.geofences
    if "geofences" in table:
        geofences = _geofences(doc, (*path, "geofences"), table["geofences"])
    try:
        rules = replace(rules, triggers=triggers, geofences=geofences, **sections)
    except ConfigError as error:
        raise doc.error(path, str(error)) from error
    return AgencyPolicy(name=name, recording=recording, rules=rules)


def _over(base: T) -> Callable[..., T]:
    """A constructor that starts from ``base`` (so a file only writes what it changes)."""
    return functools.partial(replace, base)  # type: ignore[type-var]


def _triggers(
    doc: Document, path: Path, value: object, base: Any
) -> dict[TriggerKind, TriggerRule]:
    table = doc.table(path, value)
    kinds: list[str] = list(CONFIGURABLE_KINDS)
    merged: dict[TriggerKind, TriggerRule] = dict(base)
    for kind, rule_table in table.items():
        if kind not in kinds:
            raise doc.error((*path, kind), unknown(kind, kinds, "trigger kind"))
        merged[cast("TriggerKind", kind)] = build(
            doc,
            (*path, kind),
            TriggerRule,
            doc.table((*path, kind), rule_table),
            make=_over(base[kind]),
        )
    return merged


def _geofences(doc: Document, path: Path, value: object) -> tuple[GeofenceRule, ...]:
    if not isinstance(value, list):
        raise doc.error(path, f"must be [[geofences]] tables, got {describe(value)}")
    fences = tuple(
        build(doc, (*path, index), GeofenceRule, doc.table((*path, index), item))
        for index, item in enumerate(value)
    )
    seen: set[str] = set()
    for index, fence in enumerate(fences):
        if fence.name in seen:
            raise doc.error((*path, index, "name"), f"a second geofence named {fence.name!r}")
        seen.add(fence.name)
    return fences
