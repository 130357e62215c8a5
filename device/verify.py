"""Verify a device's evidence store: who the device is, its audit chain, and every segment.

``verify_store(root)`` walks a device's data directory (docs/storage.md) and names the first
thing that is wrong, or, with ``all_faults``, the first thing wrong with each file. In order:

1. ``device.json`` parses and its public key has the key ID it names. The key everything else is
   checked against is the *trust basis*: by default that same key (``Trust.SELF``: the store is
   intact and consistent, but anyone able to rewrite all of it could have made it), or a key the
   caller got out of band (``public_key``, or a ``TrustStore``), which ``device.json`` must hold.
2. ``audit.log``: the hash chain and checkpoint signatures (``verify_audit``); the genesis record
   names this device and key.
3. Every recording directory, sorted, and every segment index in it from 0 to the highest:
   segment and manifest both present (or, for a segment deleted after a verified upload, its
   receipt in ``uploads/verified/`` with a valid signed manifest), then ``verify_segment``
   (manifest, signature, names, size, SHA-256, a strict read, the METADATA record).

Damage is reported in the returned ``VerifyReport``, never raised. ``ConfigError`` if the
directory is not a device's store or the trust options conflict; ``StorageError`` if a file
cannot be read. Crash leftovers that are not evidence (``.torn-*`` files) become notes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from device.auditformat import AuditFault, AuditProblem, AuditVerification, verify_audit
from device.durable import storage_error
from device.errors import ConfigError, EvidenceError
from device.identity import IDENTITY_FILE, IdentityDocument, read_identity
from device.segmentverify import SegmentId, detail, file_size, verify_segment
from device.signing import PUBLIC_KEY_BYTES, TrustStore, verify_signed_manifest
from device.store import RECORDINGS_DIR, manifest_path, segment_name
from device.uploads.state import VERIFIED_DIR, Receipt
from device.verifyreport import STORE_KIND_DEVICE, Fault, Note, Trust, VerifyReport
from protocol.manifest import key_id_for

AUDIT_FILE: Final = "audit.log"
UPLOADS_DIR: Final = "uploads"

ProgressFn = Callable[[int, int], None]
"""Called with (bytes of segments checked, bytes of segments in the store)."""

_INDEXED: Final = re.compile(r"seg-(\d{6,})(?:\.bwcseg|\.manifest\.json)\Z")
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")
_AUDIT_MEANING: Final = {
    AuditProblem.TORN_LINE: "the device stopped while writing it; starting the device repairs it",
    AuditProblem.BAD_GENESIS: "the file does not begin like this device's audit log",
    AuditProblem.BAD_SIGNATURE: "the log was rewritten, or signed by another key",
}


def verify_store(
    root: Path,
    *,
    public_key: bytes | None = None,
    trust_store: TrustStore | None = None,
    all_faults: bool = False,
    on_progress: ProgressFn | None = None,
) -> VerifyReport:
    """Verify the device store in ``root``; see the module docstring for what and in which order.

    Trust the key in ``device.json`` unless ``public_key`` (raw Ed25519) or ``trust_store`` is
    given. ``all_faults`` keeps going after a fault, reporting the first fault of every file.
    """
    if public_key is not None and trust_store is not None:
        raise ConfigError("trust either a public key or a trust store, not both")
    if public_key is not None and len(public_key) != PUBLIC_KEY_BYTES:
        raise ConfigError(f"a public key is {PUBLIC_KEY_BYTES} raw bytes, not {len(public_key)}")
    _require_store(root)
    verifier = _StoreVerifier(root, all_faults=all_faults, on_progress=on_progress)
    return verifier.run(public_key, trust_store)


def _require_store(root: Path) -> None:
    """``ConfigError`` unless ``root`` looks like a device store (it may still be damaged)."""
    if not root.exists():
        raise ConfigError(f"{root} does not exist")
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    parts = (IDENTITY_FILE, AUDIT_FILE, RECORDINGS_DIR)
    if not any((root / part).exists() for part in parts):
        # A store missing only some of these was damaged: that is a fault, reported by the checks.
        raise ConfigError(
            f"{root} is not a device's data directory: it has none of {', '.join(parts)}"
        )


class _Stop(Exception):  # noqa: N818 - control flow: the first fault ends a default run
    """Raised to end the run at the first fault (unless every fault is wanted)."""


@dataclass
class _Inventory:
    """The files of one recording directory, sorted by what they are."""

    path: Path
    segments: dict[int, Path] = field(default_factory=dict)
    manifests: dict[int, Path] = field(default_factory=dict)
    others: list[Path] = field(default_factory=list)


class _StoreVerifier:
    """One run of ``verify_store``: accumulates faults, notes and counts."""

    def __init__(self, root: Path, *, all_faults: bool, on_progress: ProgressFn | None) -> None:
        self.root = root
        self.all_faults = all_faults
        self.on_progress = on_progress
        self.device: str | None = None
        self.trust = Trust.SELF
        self.faults: list[Fault] = []
        self.notes: list[Note] = []
        self.recordings = self.segments = self.bytes = self.audit_records = 0
        self.done = self.total = 0
        self.stopped = False
        self._uploaded: set[tuple[str, int]] = set()

    def run(self, public_key: bytes | None, trust_store: TrustStore | None) -> VerifyReport:
        try:
            key = self._identity(public_key, trust_store)
            self._audit(key)
            self._recordings(key)
        except _Stop:
            self.stopped = True
        return VerifyReport(
            root=self.root,
            store=STORE_KIND_DEVICE,
            device=self.device,
            trust=self.trust,
            recordings=self.recordings,
            segments=self.segments,
            bytes=self.bytes,
            audit_records=self.audit_records,
            faults=tuple(self.faults),
            notes=tuple(self.notes),
            stopped_early=self.stopped,
        )

    def fault(self, path: Path | str, problem: str) -> None:
        """Record a fault; end the run here unless every fault is wanted."""
        self.faults.append(Fault(self._relative(path), problem))
        if not self.all_faults:
            raise _Stop

    def note(self, path: Path | str, text: str) -> None:
        """Record a note."""
        self.notes.append(Note(self._relative(path), text))

    def _relative(self, path: Path | str) -> str:
        if isinstance(path, str):
            return path
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # 1. Identity and trust -----------------------------------------------------------------

    def _identity(self, public_key: bytes | None, trust_store: TrustStore | None) -> bytes:
        """The key to trust; faults for an unreadable or inconsistent ``device.json``."""
        if trust_store is not None:
            self.trust = Trust.TRUST_STORE
        elif public_key is not None:
            self.trust = Trust.PUBLIC_KEY
        try:
            document = read_identity(self.root)
        except EvidenceError as exc:
            self.fault(IDENTITY_FILE, f"{detail(exc, self.root / IDENTITY_FILE)}: {_UNIDENTIFIED}")
            if public_key is None:  # nothing to check signatures with: nothing more can be said
                raise _Stop from exc
            return public_key
        self.device = document.device
        claimed = self._claimed_key(document)
        if trust_store is not None:
            return self._enrolled_key(trust_store, document, claimed)
        if public_key is not None:
            if claimed != public_key:
                self.fault(IDENTITY_FILE, _not_trusted(document, [public_key]))
            return public_key
        if claimed is None:
            raise _Stop
        return claimed

    def _claimed_key(self, document: IdentityDocument) -> bytes | None:
        if not _HEX64.match(document.public_key):
            problem = "public_key is not 64 lowercase hex digits (a raw Ed25519 key)"
            self.fault(IDENTITY_FILE, f"{problem}: {_UNIDENTIFIED}")
            return None
        raw = bytes.fromhex(document.public_key)
        if key_id_for(raw) != document.key_id:
            named = f"names key_id {document.key_id}, but its public key has ID {key_id_for(raw)}"
            self.fault(IDENTITY_FILE, f"{named}: the file was altered")
        return raw

    def _enrolled_key(
        self, trust_store: TrustStore, document: IdentityDocument, claimed: bytes | None
    ) -> bytes:
        keys = trust_store.keys(document.device)
        if claimed is not None and claimed in keys:
            return claimed
        if not keys:
            self.fault(
                IDENTITY_FILE,
                f"device {document.device} has no key in the trust store: its evidence cannot be "
                "authenticated; enrol its key out of band",
            )
            raise _Stop
        self.fault(IDENTITY_FILE, _not_trusted(document, keys))
        return keys[-1]  # the latest enrolment: the key the device should be using

    # 2. Audit log --------------------------------------------------------------------------

    def _audit(self, key: bytes) -> None:
        path = self.root / AUDIT_FILE
        for sidecar in sorted(self.root.glob(f"{AUDIT_FILE}.torn-*")):
            self.note(
                sidecar, "bytes cut off a damaged audit log tail at a start; kept, named in the log"
            )
        if not path.is_file():
            self.fault(path, "is missing: every device writes one from its first start")
            return
        result = verify_audit(path, public_keys=(key,))
        self.audit_records = result.records
        if result.fault is not None:
            self.fault(path, _audit_problem(result.fault))
            return
        if self.device is not None and result.device != self.device:
            named = f"line 1 names device {result.device}, device.json names {self.device}"
            self.fault(path, f"{named}: the log belongs to another device")
        elif result.key_id is not None and result.key_id != key_id_for(key):
            named = f"line 1 names key {result.key_id}, the trusted key is {key_id_for(key)}"
            self.fault(path, f"{named}: the log was written with another key")
        self._note_unsigned(result)

    def _note_unsigned(self, result: AuditVerification) -> None:
        last = result.last_verified_seq
        if last is None:
            self.note(
                AUDIT_FILE,
                "no signed checkpoint: the chain shows that the log is intact and in order, but "
                "not who wrote it; a rewrite of the whole log would not be detected",
            )
        elif result.records > last + 1:
            count = result.records - last - 1
            tail = "record comes" if count == 1 else f"{count} records come"
            self.note(
                AUDIT_FILE,
                f"the last {tail} after the last signed checkpoint (seq {last}): cutting "
                f"{'it' if count == 1 else 'them'} off would not be detected from this file",
            )

    # 3. Recordings and segments ------------------------------------------------------------

    def _recordings(self, key: bytes) -> None:
        base = self.root / RECORDINGS_DIR
        if not base.is_dir():
            if base.exists():
                self.fault(base, "is not a directory: the store's recordings are not there")
            else:
                self.note(base, "does not exist: the device has not recorded anything")
            return
        inventories: list[_Inventory] = []
        for entry in _listing(base):
            if entry.is_dir():
                inventories.append(_inventory(entry))
            else:
                self.note(entry, "is not a recording directory; ignored")
        self.total = sum(file_size(p) for i in inventories for p in i.segments.values())
        self._progress(0)
        self._uploaded = self._receipts(key)
        for inventory in inventories:
            self._recording(inventory, key)

    def _receipts(self, key: bytes) -> set[tuple[str, int]]:
        """Segments deleted after a verified upload: their receipts, each signature checked."""
        uploaded: set[tuple[str, int]] = set()
        directory = self.root / UPLOADS_DIR / VERIFIED_DIR
        if not directory.is_dir():
            return uploaded
        for path in sorted(directory.glob("*.json")):
            try:
                receipt = msgspec.json.decode(path.read_bytes(), type=Receipt)
                verify_signed_manifest(receipt.signed_manifest, key)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError, EvidenceError) as exc:
                self.fault(path, f"is not a valid upload receipt: {exc}")
                continue
            uploaded.add((receipt.recording, receipt.index))
        return uploaded

    def _recording(self, inventory: _Inventory, key: bytes) -> None:
        self._note_others(inventory.others)
        indexes = inventory.segments.keys() | inventory.manifests.keys()
        uploaded = sum(1 for rec, _ in self._uploaded if rec == inventory.path.name)
        if uploaded:
            self.note(inventory.path, f"{uploaded} segment(s) uploaded, verified and deleted")
        if not indexes and uploaded:
            self.recordings += 1
            return
        if not indexes:
            self.note(
                inventory.path,
                "holds no segment: the device stopped before creating segment 0, or its "
                "segments were removed (the audit log tells which)",
            )
            return
        self.recordings += 1
        expected = 0
        recording = inventory.path.name
        for index in sorted(indexes):
            missing = [i for i in range(expected, index) if (recording, i) not in self._uploaded]
            if missing:  # one fault for a run of missing indexes, however long
                self._gap(inventory.path, missing[0], missing[-1])
            self._slot(inventory, index, key)
            expected = index + 1

    def _gap(self, directory: Path, first: int, last: int) -> None:
        missing = directory / segment_name(first)
        if first == last:
            self.fault(missing, f"is missing, and its manifest too: {_GAP}")
        else:
            what = f"is missing, and so are segments {first + 1} to {last}, with their manifests"
            self.fault(missing, f"{what}: {_GAP}")

    def _slot(self, inventory: _Inventory, index: int, key: bytes) -> None:
        """Check segment ``index`` of a recording: both files present, then their contents."""
        segment, manifest = inventory.segments.get(index), inventory.manifests.get(index)
        if segment is None:
            assert manifest is not None  # the index came from one of the two
            name = segment_name(index)
            self.fault(manifest, f"has no segment file ({name}): it was deleted or moved")
            return
        size = file_size(segment)
        self.segments += 1
        self.bytes += size
        if manifest is None:
            self._progress(size)
            self.fault(segment, _UNRECOVERED)
            return
        before = self.done
        expect = None if self.device is None else SegmentId(self.device, inventory.path.name, index)
        check = verify_segment(segment, manifest, key, expect=expect, on_bytes=self._progress)
        self._progress(before + size - self.done)  # the whole file, even if the read stopped early
        if check.fault is not None:
            self.fault(check.fault.path, check.fault.problem)

    def _note_others(self, others: list[Path]) -> None:
        for path in others:
            if ".torn-" in path.name:
                origin = path.name.split(".torn-")[0]
                self.note(
                    path,
                    f"{file_size(path):,} bytes that crash recovery cut off {origin}: kept for an "
                    "examiner; no manifest covers them",
                )
            elif path.name.startswith(".") and path.name.endswith(".tmp"):
                self.note(path, "a temporary file left by an interrupted write; ignored")
            else:
                self.note(path, "not a file the device writes; ignored")

    def _progress(self, count: int) -> None:
        self.done += count
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


_UNIDENTIFIED: Final = "the device cannot be identified, so nothing it signed can be checked"
_UNRECOVERED: Final = (
    "has no manifest: it was open when the device stopped; start the device to recover it"
)
_GAP: Final = "a recording's segments are numbered from 0 without gaps: deleted or moved"


def _not_trusted(document: IdentityDocument, keys: list[bytes] | tuple[bytes, ...]) -> str:
    trusted = ", ".join(key_id_for(key) for key in keys)
    return (
        f"holds key {document.key_id}, but the key trusted for device {document.device} is "
        f"{trusted}: another device made this store, or device.json was replaced"
    )


def _audit_problem(fault: AuditFault) -> str:
    seq = "?" if fault.seq is None else fault.seq
    meaning = _AUDIT_MEANING.get(fault.problem, "it was altered or damaged after it was written")
    where = f"line {fault.line} (seq {seq}, byte {fault.offset})"
    return f"{where}: {fault.problem}: {fault.detail}: {meaning}"


def _listing(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        raise storage_error("listing", directory, exc) from exc


def _inventory(directory: Path) -> _Inventory:
    inventory = _Inventory(directory)
    for entry in _listing(directory):
        match = _INDEXED.match(entry.name)
        index = -1 if match is None else int(match[1])
        segment = directory / segment_name(index) if index >= 0 else None
        if segment is not None and entry == segment and entry.is_file():
            inventory.segments[index] = entry
        elif segment is not None and entry == manifest_path(segment) and entry.is_file():
            inventory.manifests[index] = entry
        else:
            inventory.others.append(entry)
    return inventory
