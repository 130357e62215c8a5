"""The audit log's line format, its chain rule, and the verifier.

A log is UTF-8 (in fact ASCII) JSON Lines. Each line is one JSON object ending in ``\\n``::

    {"seq":N,"utc":"...Z","mono_s":S,"kind":"...",<fields>,"prev":"<64 hex>","hash":"<64 hex>"}

Chain rule, on exact bytes: the *body* is the line without its last 76 bytes
(``,"hash":"<64 hex>"}`` and the newline) followed by ``}``; ``hash`` is the hex SHA-256 of the
body; ``prev`` is the previous line's ``hash`` (64 zeros for line 1, the genesis record);
``seq`` counts from 0 without gaps. A verifier needs no canonical JSON: it slices bytes, hashes,
and parses the body only to read ``seq`` and ``prev``. Checkpoint records carry an Ed25519
signature over ``"bwc-audit-checkpoint:" + prev`` (ASCII), which commits to every line before.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeAlias

from device.durable import storage_error
from device.errors import EvidenceError
from device.signing import signature_valid
from protocol.manifest import key_id_for

JsonValue: TypeAlias = (
    str | int | float | bool | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)

AUDIT_FORMAT: Final = "bwc-audit/1"
GENESIS_PREV: Final = "0" * 64
MAX_LINE_BYTES: Final = 64 * 1024
CHECKPOINT_CONTEXT: Final = b"bwc-audit-checkpoint:"
RESERVED_FIELDS: Final = frozenset({"seq", "utc", "mono_s", "kind", "prev", "hash"})
KIND_PATTERN: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")

_SUFFIX: Final = re.compile(rb',"hash":"([0-9a-f]{64})"\}\n\Z')
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")
_HEX128: Final = re.compile(r"[0-9a-f]{128}\Z")


class AuditProblem(StrEnum):
    """What is wrong with the first bad line of a log."""

    TORN_LINE = "torn line"  # no newline at the end (the file ends inside the line)
    BAD_FORMAT = "bad format"  # too long, or not ending in ,"hash":"<64 hex>"}
    HASH_MISMATCH = "hash mismatch"  # SHA-256 of the body differs from the line's hash
    BAD_JSON = "bad JSON"  # the body is not one JSON object with unique keys
    BAD_FIELD = "bad field"  # a standard field is missing or has the wrong type
    SEQ_GAP = "seq gap"  # seq is not the previous seq + 1
    PREV_MISMATCH = "prev mismatch"  # prev is not the previous line's hash
    BAD_GENESIS = "bad genesis"  # line 1 is not a genesis record
    BAD_SIGNATURE = "bad signature"  # a checkpoint signature does not verify


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One valid line: its standard fields, kind-specific ``fields`` and position in the file."""

    seq: int
    utc: str
    mono_s: float
    kind: str
    fields: Mapping[str, JsonValue]
    prev: str
    hash: str
    offset: int


@dataclass(frozen=True, slots=True)
class AuditFault:
    """The first bad line: 1-based ``line``, its byte ``offset``, the ``seq`` it claims if any."""

    line: int
    offset: int
    seq: int | None
    problem: AuditProblem
    detail: str


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """Result of ``verify_audit``: what verified, and the first fault if there is one."""

    path: Path
    records: int
    device: str | None
    key_id: str | None
    head: str | None
    checkpoints_verified: int
    checkpoints_unverified: int
    last_verified_seq: int | None
    fault: AuditFault | None

    @property
    def ok(self) -> bool:
        """Whether every line verified."""
        return self.fault is None

    def message(self) -> str:
        """One line for a human: OK with counts, or the fault with line, seq and offset."""
        fault = self.fault
        if fault is None:
            return f"{self.path}: OK, {self.records} records"
        seq = "?" if fault.seq is None else fault.seq
        return (
            f"{self.path}: line {fault.line} (seq {seq}, byte {fault.offset}): "
            f"{fault.problem}: {fault.detail}"
        )

    def raise_for_fault(self) -> None:
        """Raise ``EvidenceError`` with ``message()`` if a line did not verify."""
        if self.fault is not None:
            raise EvidenceError(self.message())


class LineError(Exception):
    """A line does not stand on its own (internal to parsing; verifiers report an AuditFault)."""

    def __init__(self, problem: AuditProblem, detail: str, seq: int | None = None) -> None:
        super().__init__(detail)
        self.problem, self.detail, self.seq = problem, detail, seq


def utc_text(utc: datetime) -> str:
    """The ``utc`` field: RFC 3339 in UTC with microseconds and ``Z``; naive times refused."""
    if utc.tzinfo is None or utc.utcoffset() is None:
        raise ValueError(f"audit time {utc!r} has no time zone; pass an aware UTC datetime")
    return utc.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_line(
    seq: int, utc: str, mono_s: float, kind: str, fields: Mapping[str, JsonValue], *, prev: str
) -> tuple[bytes, str]:
    """The exact line bytes and hash of a record; ValueError for a field that cannot be written."""
    if not KIND_PATTERN.match(kind):
        raise ValueError(f"audit kind {kind!r} must match {KIND_PATTERN.pattern}")
    if clash := RESERVED_FIELDS & fields.keys():
        raise ValueError(f"audit fields {sorted(clash)} are reserved")
    if not (math.isfinite(mono_s) and mono_s >= 0):
        raise ValueError(f"mono_s {mono_s!r} must be a finite number >= 0")
    document = {"seq": seq, "utc": utc, "mono_s": float(mono_s), "kind": kind, **fields}
    document["prev"] = prev
    try:
        body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:  # an unsupported type, NaN or infinity
        raise ValueError(f"audit fields of a {kind!r} record are not JSON: {exc}") from exc
    digest = hashlib.sha256(body).hexdigest()
    line = body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n'
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(f"audit record of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
    return line, digest


def parse_line(raw: bytes, offset: int) -> AuditRecord:
    """Check that one line is well formed and its hash matches; raise ``LineError`` if not."""
    if len(raw) > MAX_LINE_BYTES:
        raise LineError(AuditProblem.BAD_FORMAT, f"longer than {MAX_LINE_BYTES} bytes")
    if not raw.endswith(b"\n"):
        raise LineError(AuditProblem.TORN_LINE, f"{len(raw)} bytes without a final newline")
    match = _SUFFIX.search(raw)
    if match is None:
        raise LineError(AuditProblem.BAD_FORMAT, 'does not end with ,"hash":"<64 hex>"}')
    body = raw[: match.start()] + b"}"
    claimed, actual = match.group(1).decode("ascii"), hashlib.sha256(body).hexdigest()
    if claimed != actual:
        raise LineError(AuditProblem.HASH_MISMATCH, f"line says {claimed}, body hashes to {actual}")
    try:
        document = json.loads(body, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LineError(AuditProblem.BAD_JSON, str(exc)) from exc
    return _record_from(document, claimed, offset)


def _unique_keys(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    document = dict(pairs)
    if len(document) != len(pairs):
        # Duplicate keys parse differently in different languages: an auditor must see one value.
        raise ValueError("duplicate keys in a JSON object")
    return document


def _record_from(document: object, digest: str, offset: int) -> AuditRecord:
    if not isinstance(document, dict):
        raise LineError(AuditProblem.BAD_JSON, "the line is not a JSON object")
    seq, utc, mono_s = document.get("seq"), document.get("utc"), document.get("mono_s")
    kind, prev = document.get("kind"), document.get("prev")
    claimed = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if claimed is None or claimed < 0:
        raise LineError(AuditProblem.BAD_FIELD, "seq is not an integer >= 0")
    if not isinstance(utc, str) or not isinstance(kind, str):
        raise LineError(AuditProblem.BAD_FIELD, "utc and kind must be strings", claimed)
    if isinstance(mono_s, bool) or not isinstance(mono_s, int | float):
        raise LineError(AuditProblem.BAD_FIELD, "mono_s is not a number", claimed)
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise LineError(AuditProblem.BAD_FIELD, "prev is not 64 lowercase hex digits", claimed)
    fields = {k: v for k, v in document.items() if k not in RESERVED_FIELDS}
    return AuditRecord(claimed, utc, float(mono_s), kind, fields, prev, digest, offset)


def checkpoint_message(prev: str) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return CHECKPOINT_CONTEXT + prev.encode("ascii")


class _Chain:
    """Walks records in order, checking links, genesis and checkpoint signatures."""

    def __init__(self, public_keys: Iterable[bytes]) -> None:
        self.keys = {key_id_for(key): key for key in public_keys}
        self.count = 0
        self.head: str | None = None
        self.device: str | None = None
        self.key_id: str | None = None
        self.verified = self.unverified = 0
        self.last_verified_seq: int | None = None

    def check(self, record: AuditRecord) -> None:
        """Accept ``record`` as the next one, or raise ``LineError``."""
        if record.seq != self.count:
            raise LineError(AuditProblem.SEQ_GAP, f"expected seq {self.count}", record.seq)
        expected = GENESIS_PREV if self.head is None else self.head
        if record.prev != expected:
            raise LineError(AuditProblem.PREV_MISMATCH, f"prev should be {expected}", record.seq)
        if self.count == 0:
            self._genesis(record)
        elif record.kind == "checkpoint":
            self._checkpoint(record)
        self.count += 1
        self.head = record.hash

    def _genesis(self, record: AuditRecord) -> None:
        device, key_id = record.fields.get("device"), record.fields.get("key_id")
        valid = (
            record.kind == "genesis"
            and record.fields.get("format") == AUDIT_FORMAT
            and isinstance(device, str)
            and (key_id is None or isinstance(key_id, str))
        )
        if not valid:
            detail = f"line 1 must be a {AUDIT_FORMAT} genesis record with a device"
            raise LineError(AuditProblem.BAD_GENESIS, detail, record.seq)
        self.device, self.key_id = str(device), None if key_id is None else str(key_id)

    def _checkpoint(self, record: AuditRecord) -> None:
        key_id, sig = record.fields.get("key_id"), record.fields.get("sig")
        if not isinstance(key_id, str) or not isinstance(sig, str) or not _HEX128.match(sig):
            raise LineError(AuditProblem.BAD_FIELD, "checkpoint needs key_id and sig", record.seq)
        if not self.keys:
            self.unverified += 1
            return
        key = self.keys.get(key_id)
        message = checkpoint_message(record.prev)
        if key is None or not signature_valid(key, bytes.fromhex(sig), message):
            why = "is not trusted" if key is None else "does not match its signature"
            raise LineError(AuditProblem.BAD_SIGNATURE, f"key {key_id} {why}", record.seq)
        self.verified += 1
        self.last_verified_seq = record.seq


@dataclass(frozen=True, slots=True)
class ChainExtension:
    """What ``extend_chain`` found: how far the new lines continue the chain, and the first fault.

    ``records`` lines verified, ending at byte ``end`` with hash ``head``; ``device`` is the
    genesis record's device when the lines start the log (``next_seq`` 0).
    """

    records: int
    end: int
    head: str | None
    device: str | None
    checkpoints_verified: int
    fault: AuditFault | None


def extend_chain(
    data: bytes,
    *,
    offset: int,
    next_seq: int,
    head: str | None,
    public_keys: Iterable[bytes] = (),
) -> ChainExtension:
    """Check ``data``, found at byte ``offset`` of a log, as the lines that follow its first
    ``next_seq`` records, the last of which has hash ``head`` (``None`` for an empty log).

    The same checks as ``verify_audit``, line by line, from a known position instead of line 1
    (an evidence receiver appending what a device ships). The fault's ``line`` counts from the
    start of the log. A last line without its newline is a torn line.
    """
    chain = _Chain(public_keys)
    chain.count, chain.head = next_seq, (None if next_seq == 0 else head)
    fault, position, start = None, offset, 0
    while start < len(data):
        newline = data.find(b"\n", start)
        stop = len(data) if newline < 0 else newline + 1
        try:
            chain.check(parse_line(data[start:stop], position))
        except LineError as exc:
            fault = AuditFault(chain.count + 1, position, exc.seq, exc.problem, exc.detail)
            break
        position += stop - start
        start = stop
    return ChainExtension(
        records=chain.count - next_seq,
        end=position,
        head=chain.head,
        device=chain.device,
        checkpoints_verified=chain.verified,
        fault=fault,
    )


def verify_audit(path: Path, *, public_keys: Iterable[bytes] = ()) -> AuditVerification:
    """Verify a whole log, reading one line at a time; report the first bad line.

    Checkpoint signatures are verified when ``public_keys`` (raw Ed25519 keys) are given and
    counted as unverified otherwise. ``StorageError`` if the file cannot be read; damage is
    reported in the result, never raised.
    """
    chain, fault, offset, line_no = _Chain(public_keys), None, 0, 0
    try:
        with path.open("rb") as file:
            while raw := file.readline(MAX_LINE_BYTES + 1):
                line_no += 1
                try:
                    chain.check(parse_line(raw, offset))
                except LineError as exc:
                    fault = AuditFault(line_no, offset, exc.seq, exc.problem, exc.detail)
                    break
                offset += len(raw)
    except OSError as exc:
        raise storage_error("reading audit log", path, exc) from exc
    if fault is None and line_no == 0:
        fault = AuditFault(1, 0, None, AuditProblem.BAD_GENESIS, "the log is empty")
    return AuditVerification(
        path=path,
        records=chain.count,
        device=chain.device,
        key_id=chain.key_id,
        head=chain.head,
        checkpoints_verified=chain.verified,
        checkpoints_unverified=chain.unverified,
        last_verified_seq=chain.last_verified_seq,
        fault=fault,
    )
