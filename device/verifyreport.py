"""What a store verification found: the report, its JSON object and its lines for a human.

Shared by every kind of store (``store`` says which: the device's now, the evidence receiver's
later), so tools and tests read one shape. The JSON object is documented in docs/storage.md
("Verifying a store").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

STORE_KIND_DEVICE: Final = "device"


class Trust(StrEnum):
    """What the key that checks every signature rests on."""

    SELF = "self"  # the key in the store itself: integrity, not authenticity
    PUBLIC_KEY = "public_key"  # a key the caller passed in: authentic if got out of band
    TRUST_STORE = "trust_store"  # a key enrolled out of band in a TrustStore: authentic

    @property
    def authentic(self) -> bool:
        """Whether a clean result also shows who made the evidence."""
        return self is not Trust.SELF

    def describe(self) -> str:
        """One line on what this trust basis proves."""
        return _TRUST_TEXT[self]


_TRUST_TEXT: Final = {
    Trust.SELF: "the key in device.json: this checks integrity, not authenticity (whoever can "
    "rewrite the whole store can also replace that key)",
    Trust.PUBLIC_KEY: "the public key given: authentic as far as that key was obtained out of band",
    Trust.TRUST_STORE: "the key enrolled in the trust store: authentic",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """Something wrong: ``path`` relative to the store, ``problem`` what and what it means."""

    path: str
    problem: str


@dataclass(frozen=True, slots=True)
class Note:
    """Worth knowing but not a fault: crash leftovers, an audit tail no checkpoint signs yet."""

    path: str
    note: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of a store verification.

    Counts cover what was checked: when verification stops at the first fault (``stopped_early``)
    whatever came after it is not counted. ``bytes`` is the size of the segment files checked.
    """

    root: Path
    store: str
    device: str | None
    trust: Trust
    recordings: int
    segments: int
    bytes: int
    audit_records: int
    faults: tuple[Fault, ...]
    notes: tuple[Note, ...]
    stopped_early: bool

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return not self.faults

    def to_json(self) -> dict[str, object]:
        """The report as one JSON-ready object (what ``bwc-sim verify --json`` prints)."""
        return {
            "ok": self.ok,
            "store": self.store,
            "device": self.device,
            "trust": self.trust.value,
            "recordings": self.recordings,
            "segments": self.segments,
            "bytes": self.bytes,
            "audit_records": self.audit_records,
            "faults": [{"path": f.path, "problem": f.problem} for f in self.faults],
            "notes": [{"path": n.path, "note": n.note} for n in self.notes],
        }

    def lines(self) -> list[str]:
        """The report for a human: what was checked and on what trust, notes, faults, verdict."""
        device = "unknown device" if self.device is None else f"device {self.device}"
        counts = (
            f"checked: recordings {self.recordings}, segments {self.segments}, "
            f"segment bytes {self.bytes:,}, audit records {self.audit_records}"
        )
        out = [f"{self.root}: {self.store} store of {device}", f"trust: {self.trust.describe()}"]
        out.append(counts)
        out += [f"note: {note.path}: {note.note}" for note in self.notes]
        out += [f"FAULT: {fault.path}: {fault.problem}" for fault in self.faults]
        out.append(self.verdict())
        return out

    def verdict(self) -> str:
        """The last line: OK, or how many faults and whether checking stopped at the first."""
        if self.ok:
            return "OK: every check holds" + ("" if self.trust.authentic else " (integrity only)")
        if self.stopped_early:
            return "FAILED at the first fault; later files were not checked"
        count = len(self.faults)
        return f"FAILED: {count} fault{'s' if count > 1 else ''}"
