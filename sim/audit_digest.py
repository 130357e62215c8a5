"""What the scenario report reads back from a device's audit log: triggers, starts, categories.

The report describes the evidence as a verifier finds it, so it reads the audit log on disk
rather than the run's memory. Lines that do not parse (a torn tail after a power loss that the
next boot repaired around) are skipped: ``bwc-sim verify`` is where the log's integrity is
judged.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class AuditDigest:
    """Facts from an audit log, keyed by recording ID where they belong to one.

    ``triggers``: every trigger that asked to record, as (monotonic s, kind), in order, ignored
    ones included. ``by_recording``: the triggers that started a recording or were noted while
    it ran, as JSON objects. ``started``: when each recording was activated. ``categories``:
    categories assigned after a recording stopped (by the officer or the prompt's default).
    """

    triggers: list[tuple[float, str]] = field(default_factory=list)
    by_recording: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    started: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def read_audit(path: Path) -> AuditDigest:
    """Digest the audit log at ``path`` (a missing log gives an empty digest)."""
    digest = AuditDigest()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return digest
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            _take(digest, record)
    return digest


def _take(digest: AuditDigest, record: dict[str, Any]) -> None:
    kind, at = record.get("kind"), record.get("mono_s", 0.0)
    if kind == "trigger" and record.get("request") == "activate":
        digest.triggers.append((at, str(record.get("trigger"))))
        recording = record.get("recording")
        if recording and record.get("act") in ("start", "note"):
            digest.by_recording[recording].append(
                {
                    "kind": record.get("trigger"),
                    "source": record.get("source"),
                    "at_s": at,
                    "act": record.get("act"),
                }
            )
    elif kind == "recording_started":
        digest.started.setdefault(str(record.get("recording")), at)
    elif kind == "categorized" and record.get("accepted") and record.get("recording"):
        for name in record.get("categories") or []:
            digest.categories[str(record["recording"])].append(str(name))
