"""Check one closed segment file against its signed manifest, with bounded memory.

``verify_segment(segment, manifest, public_key)`` is the check every store runs per segment (the
device's ``bwc-sim verify``, and later the evidence receiver's store): it takes paths and a raw
Ed25519 key only, so it knows nothing about where a store keeps its files. It stops at the first
fault and reports it (path and problem) instead of raising; only an unreadable file raises
(``StorageError``), because then nothing can be concluded about the evidence.

Order of the checks, cheapest and most fundamental first:

1. the manifest file is at most 64 KiB and decodes as a signed envelope;
2. the envelope's key ID is the trusted key's, and the Ed25519 signature covers its bytes;
3. the manifest is valid and names the expected device, recording and index (when given);
4. the file's size is the manifest's ``size``;
5. one strict pass (``SegmentReader``): the header names the same segment, every record is
   complete with a good CRC, the file's SHA-256 is the manifest's ``sha256`` and it holds exactly
   ``records`` records;
6. the first record is the METADATA record (``SegmentStart``) and agrees with the manifest.

A changed byte anywhere in the file fails 5 (a CRC, or the SHA-256 when someone recomputed the
CRCs); a changed byte in the manifest fails 1 or 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from device.durable import storage_error
from device.errors import ConfigError, EvidenceError
from device.recordfile import Record, RecordType, SegmentReader
from device.segmentmeta import SegmentStart
from device.signing import signature_valid, verify_signed_manifest
from device.store import read_signed_manifest
from protocol.manifest import SegmentManifest, key_id_for

MAX_MANIFEST_BYTES: Final = 64 * 1024
"""Largest manifest file read; anything longer is not a manifest (and is never loaded)."""

PROGRESS_STEP: Final = 4 * 1024 * 1024
"""Bytes read between two progress callbacks: often enough for a bar, rare enough to be free."""

CHANGED: Final = "the file is not the one its manifest signed (damaged or altered since)"

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True, slots=True)
class SegmentId:
    """Which segment a file claims to be, or is expected to be."""

    device: str
    recording: str
    index: int

    def __str__(self) -> str:
        return f"{self.device}/{self.recording}/{self.index}"

    @classmethod
    def of(cls, manifest: SegmentManifest) -> SegmentId:
        """The segment a manifest describes."""
        return cls(manifest.device, manifest.recording, manifest.index)


@dataclass(frozen=True, slots=True)
class SegmentFault:
    """The first thing wrong with a segment: the file at fault, what is wrong and what it means."""

    path: Path
    problem: str


@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """What ``verify_segment`` found.

    ``manifest`` is the verified manifest (None if the manifest itself failed); ``records`` the
    records read before the end or the fault; ``fault`` None when every check held.
    """

    manifest: SegmentManifest | None
    records: int
    fault: SegmentFault | None

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return self.fault is None


class _Bad(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """A check failed; carries the fault out of nested helpers."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path, self.problem = path, problem


def parse_public_key(text: str) -> bytes:
    """A raw Ed25519 public key from 64 hex digits; ``ConfigError`` naming the problem if not."""
    if not _HEX_KEY.match(text):
        raise ConfigError(
            f"a public key is 64 hex digits (raw Ed25519), got {len(text)} characters"
        )
    return bytes.fromhex(text)


def verify_segment(
    segment: Path,
    manifest: Path,
    public_key: bytes,
    *,
    expect: SegmentId | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> SegmentCheck:
    """Check ``segment`` against the signed manifest in ``manifest``, trusting ``public_key``.

    ``expect`` is the segment the caller's layout says this is (device, recording directory,
    file name); ``on_bytes`` is called with the bytes read since its last call, for a progress bar.
    ``StorageError`` if a file cannot be read; every other problem is the result's ``fault``.
    """
    verified: SegmentManifest | None = None
    counter = _Counter(on_bytes)
    try:
        verified = _verified_manifest(manifest, public_key, expect)
        _check_file(segment, verified, counter)
    except _Bad as bad:
        return SegmentCheck(verified, counter.records, SegmentFault(bad.path, bad.problem))
    return SegmentCheck(verified, counter.records, None)


def file_size(path: Path) -> int:
    """Size of ``path``; ``StorageError`` if it cannot be read."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc


def detail(error: Exception, subject: Path | str) -> str:
    """An error's message without the leading name of ``subject`` (the caller names it)."""
    text = str(error)
    for lead in (f"{subject}: ", f"{subject} is ", f"{subject} "):
        if text.startswith(lead):
            return text[len(lead) :]
    return text


class _Counter:
    """Counts records and reports bytes read in ``PROGRESS_STEP`` batches."""

    def __init__(self, on_bytes: Callable[[int], None] | None) -> None:
        self.records = 0
        self._pending = 0
        self._on_bytes = on_bytes

    def add(self, size: int) -> None:
        self.records += 1
        self._pending += size
        if self._pending >= PROGRESS_STEP:
            self.flush()

    def flush(self) -> None:
        if self._on_bytes is not None and self._pending:
            self._on_bytes(self._pending)
        self._pending = 0


def _verified_manifest(path: Path, public_key: bytes, expect: SegmentId | None) -> SegmentManifest:
    size = file_size(path)
    if size > MAX_MANIFEST_BYTES:
        limit = f"a manifest is at most {MAX_MANIFEST_BYTES:,}"
        raise _Bad(path, f"is {size:,} bytes and {limit}: it is not a manifest")
    try:
        signed = read_signed_manifest(path)
    except EvidenceError as exc:
        raise _Bad(path, f"{detail(exc, path)}: the manifest was damaged or altered") from exc
    trusted = key_id_for(public_key)
    if signed.key_id != trusted:
        what = f"is signed by key {signed.key_id}, not by the trusted key {trusted}"
        raise _Bad(path, f"{what}: another key made it, or its key ID was altered")
    # The envelope's pattern guarantees 128 hex digits, so fromhex cannot fail here.
    if not signature_valid(public_key, bytes.fromhex(signed.signature), signed.signed_bytes()):
        problem = "the signature does not verify: the manifest was altered after it was signed"
        raise _Bad(path, problem)
    try:  # the remaining rules: the signed bytes are a valid manifest naming the same key
        manifest = verify_signed_manifest(signed, public_key)
    except EvidenceError as exc:
        raise _Bad(path, detail(exc, f"manifest {signed.upload_id()}")) from exc
    found = SegmentId.of(manifest)
    if expect is not None and found != expect:
        problem = f"describes segment {found} but is stored as {expect}: it was moved or copied"
        raise _Bad(path, problem)
    return manifest


def _check_file(path: Path, manifest: SegmentManifest, counter: _Counter) -> None:
    size = file_size(path)
    if size != manifest.size:
        said = f"is {size:,} bytes but its manifest says {manifest.size:,}"
        raise _Bad(path, f"{said}: the file was cut, extended or replaced after it was signed")
    try:
        with SegmentReader(path, strict=True, with_payload=True) as reader:
            _check_header(reader, manifest, path)
            first = _read_records(reader, counter)
            digest = reader.sha256
    except EvidenceError as exc:
        raise _Bad(path, f"{detail(exc, path)}: {CHANGED}") from exc
    finally:
        counter.flush()
    if digest != manifest.sha256:
        raise _Bad(path, f"has SHA-256 {digest}, its manifest says {manifest.sha256}: {CHANGED}")
    if counter.records != manifest.records:
        said = f"holds {counter.records} records, its manifest says {manifest.records}"
        raise _Bad(path, f"{said}: {CHANGED}")
    _check_start(first, manifest, path)


def _check_header(reader: SegmentReader, manifest: SegmentManifest, path: Path) -> None:
    header = reader.header
    if header is None:  # a strict reader raises first; this keeps the types honest
        raise _Bad(path, f"has no complete header: {CHANGED}")
    found = SegmentId(header.device, header.recording, header.index)
    if found != SegmentId.of(manifest):
        named = f"its header names segment {found}, its manifest {SegmentId.of(manifest)}"
        raise _Bad(path, f"{named}: {CHANGED}")


def _read_records(reader: SegmentReader, counter: _Counter) -> Record | None:
    """Read every record (strict: a bad one raises); keep only the first, for its metadata."""
    first: Record | None = None
    for record in reader:
        if first is None:
            first = record
        counter.add(record.info.size)
    return first


def _check_start(first: Record | None, manifest: SegmentManifest, path: Path) -> None:
    if first is None or first.info.type is not RecordType.METADATA:
        problem = "does not begin with a METADATA record: the segment cannot describe itself"
        raise _Bad(path, f"{problem} (written by another program, or a device bug)")
    try:
        start = SegmentStart.decode(first.payload, str(path))
    except EvidenceError as exc:
        raise _Bad(path, detail(exc, path)) from exc
    pairs = {
        "device": (start.device, manifest.device),
        "recording": (start.recording, manifest.recording),
        "index": (start.index, manifest.index),
        "start_trigger": (start.start_trigger, manifest.start_trigger),
        "requested_pre_roll_s": (start.requested_pre_roll_s, manifest.requested_pre_roll_s),
        "delivered_pre_roll_s": (start.delivered_pre_roll_s, manifest.delivered_pre_roll_s),
        "clock_set": (start.clock_set, manifest.clock_set),
        "critical": (start.critical, manifest.critical),
    }
    wrong = [name for name, (ours, signed) in pairs.items() if ours != signed]
    if wrong:
        fields = ", ".join(wrong)
        problem = f"its METADATA record disagrees with its signed manifest on {fields}"
        raise _Bad(path, f"{problem}: the device signed a manifest that does not describe it")
