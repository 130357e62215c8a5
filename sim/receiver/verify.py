"""``bwc-sim verify DIR`` for an evidence receiver's store (docs/receiver.md).

Every segment under ``devices/{device}/recordings/`` is checked like a device's own
(``device.segmentverify.verify_segment``: manifest, signature, names, size, SHA-256, a strict read
of every record), against the keys of that device: by default those in the store's own ``trust/``
(``Trust.SELF``: integrity, since whoever rewrites the store can rewrite ``trust/`` too), or a key
or trust store got out of band. Then every receipt must name a segment that is there and matches.
Each received ``devices/{device}/audit.log`` is verified like a device's (``verify_audit``: every
line's hash, link and seq, the genesis naming that device, every checkpoint's signature against
the same keys) and its record count reported in a note.
Uploads in progress and segments not received yet are notes, not faults: a receiver holds what
devices have sent so far.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from device.auditformat import AuditVerification, verify_audit
from device.errors import ConfigError, EvidenceError, StorageError
from device.segmentverify import SegmentId, file_size, verify_segment
from device.signing import TrustStore
from device.store import RECORDINGS_DIR, manifest_path, read_signed_manifest, segment_name
from device.verifyreport import Fault, Note, Trust, VerifyReport
from protocol.errors import DecodeError
from protocol.manifest import key_id_for
from sim.receiver.store import (
    AUDIT_FILE,
    DEVICES_DIR,
    INCOMING_DIR,
    MARKER_FILE,
    PART_SUFFIX,
    RECEIPTS_DIR,
    TRUST_DIR,
    Receipt,
    read_document,
)

STORE_KIND_RECEIVER: Final = "receiver"
_INDEXED: Final = re.compile(r"seg-(\d{6,})\.(bwcseg|manifest\.json)\Z")


def is_receiver_store(root: Path) -> bool:
    """Whether ``root`` looks like a receiver's store (its marker file, or ``devices/``)."""
    return (root / MARKER_FILE).is_file() or (root / DEVICES_DIR).is_dir()


@dataclass
class _Run:
    root: Path
    keys_of: TrustStore | bytes
    all_faults: bool
    faults: list[Fault] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    recordings: int = 0
    segments: int = 0
    byte_count: int = 0
    audit_records: int = 0

    def fault(self, path: Path, problem: str) -> None:
        self.faults.append(Fault(self._rel(path), problem))
        if not self.all_faults:
            raise _Stop

    def note(self, path: Path, text: str) -> None:
        self.notes.append(Note(self._rel(path), text))

    def _rel(self, path: Path) -> str:
        return (
            path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        )

    def keys(self, device: str) -> tuple[bytes, ...]:
        if isinstance(self.keys_of, bytes):
            return (self.keys_of,)
        return self.keys_of.keys(device)


class _Stop(Exception):  # noqa: N818 - control flow: the first fault ends a default run
    pass


def verify_receiver_store(
    root: Path,
    *,
    public_key: bytes | None = None,
    trust_store: TrustStore | None = None,
    all_faults: bool = False,
) -> VerifyReport:
    """Verify a receiver store; faults in the report, ``ConfigError`` if it is not one."""
    if not root.is_dir() or not is_receiver_store(root):
        raise ConfigError(f"{root} is not an evidence receiver's store")
    if public_key is not None and trust_store is not None:
        raise ConfigError("trust either a public key or a trust store, not both")
    trust = Trust.SELF
    keys_of: TrustStore | bytes = TrustStore(root / TRUST_DIR)
    if public_key is not None:
        trust, keys_of = Trust.PUBLIC_KEY, public_key
    elif trust_store is not None:
        trust, keys_of = Trust.TRUST_STORE, trust_store
    run = _Run(root, keys_of, all_faults)
    stopped = False
    try:
        _devices(run)
        _receipts(run)
        _incoming(run)
    except _Stop:
        stopped = True
    devices = sorted(run.devices)
    return VerifyReport(
        root=root,
        store=STORE_KIND_RECEIVER,
        device=devices[0] if len(devices) == 1 else None,
        trust=trust,
        recordings=run.recordings,
        segments=run.segments,
        bytes=run.byte_count,
        audit_records=run.audit_records,
        faults=tuple(run.faults),
        notes=tuple(run.notes),
        stopped_early=stopped,
    )


def _devices(run: _Run) -> None:
    for device_dir in _listing(run.root / DEVICES_DIR):
        run.devices.add(device_dir.name)
        keys = run.keys(device_dir.name)
        if not keys:
            run.fault(
                device_dir,
                "no trusted key for this device: its segments and audit log cannot be checked",
            )
            continue
        _audit(run, device_dir, keys)
        for recording in _listing(device_dir / RECORDINGS_DIR):
            _recording(run, device_dir.name, recording, keys)


def _audit(run: _Run, device_dir: Path, keys: tuple[bytes, ...]) -> None:
    for sidecar in sorted(device_dir.glob(f"{AUDIT_FILE}.torn-*")):
        run.note(
            sidecar, "a torn tail the receiver cut off its copy at a start (never acked); kept"
        )
    path = device_dir / AUDIT_FILE
    if not path.is_file():
        return  # nothing shipped yet
    result = verify_audit(path, public_keys=keys)
    run.audit_records += result.records
    if result.fault is not None:
        run.fault(path, result.message().removeprefix(f"{path}: "))
    elif result.device != device_dir.name:
        run.fault(path, f"line 1 names device {result.device}: the log belongs to another device")
    else:
        run.note(path, _audit_summary(result))


def _audit_summary(result: AuditVerification) -> str:
    text = f"{result.records} records received and verified"
    last = result.last_verified_seq
    if last is None:
        return f"{text}; no signed checkpoint yet: who wrote them is not proven"
    after = result.records - last - 1
    text = f"{text}, {result.checkpoints_verified} signed checkpoints (last at seq {last})"
    return f"{text}; {after} records after it" if after else text


def _recording(run: _Run, device: str, directory: Path, keys: tuple[bytes, ...]) -> None:
    slots: dict[int, set[str]] = {}
    for entry in _listing(directory, dirs=False):
        match = _INDEXED.match(entry.name)
        if match is None:
            run.note(entry, "not a file the receiver writes; ignored")
            continue
        slots.setdefault(int(match[1]), set()).add(match[2])
    if not slots:
        return
    run.recordings += 1
    missing = sorted(set(range(max(slots) + 1)) - slots.keys())
    if missing:
        run.note(directory, f"segments not received (yet): {', '.join(map(str, missing))}")
    for index, kinds in sorted(slots.items()):
        segment = directory / segment_name(index)
        if "bwcseg" not in kinds:
            run.fault(manifest_path(segment), "has no segment file: it was deleted or moved")
        elif "manifest.json" not in kinds:
            run.fault(segment, _UNFINISHED)
        else:
            _segment(run, SegmentId(device, directory.name, index), segment, keys)


def _segment(run: _Run, expect: SegmentId, segment: Path, keys: tuple[bytes, ...]) -> None:
    run.segments += 1
    run.byte_count += file_size(segment)
    key = keys[-1]
    try:
        named = read_signed_manifest(manifest_path(segment)).key_id
        key = next((k for k in keys if key_id_for(k) == named), key)
    except EvidenceError:
        pass  # verify_segment names the problem with the manifest
    check = verify_segment(segment, manifest_path(segment), key, expect=expect)
    if check.fault is not None:
        run.fault(check.fault.path, check.fault.problem)


def _receipts(run: _Run) -> None:
    for path in _listing(run.root / RECEIPTS_DIR, dirs=False):
        try:
            receipt = read_document(path, Receipt)
        except StorageError as exc:
            run.fault(path, str(exc))
            continue
        if receipt is None:
            continue
        segment = run.root / receipt.segment
        if not segment.is_file() or file_size(segment) != receipt.size:
            run.fault(path, f"names {receipt.segment}, which is missing or has another size")
            continue
        try:
            stored = read_signed_manifest(manifest_path(segment)).decode()
        except (EvidenceError, StorageError, DecodeError) as exc:
            run.fault(path, f"names {receipt.segment}, whose manifest is unreadable: {exc}")
            continue
        if stored.sha256 != receipt.sha256 or stored.device != receipt.device:
            run.fault(path, f"does not match the manifest of {receipt.segment}")


def _incoming(run: _Run) -> None:
    for part in _listing(run.root / INCOMING_DIR, dirs=False):
        if part.name.endswith(PART_SUFFIX):
            run.note(part, f"an upload in progress: {file_size(part):,} bytes committed so far")


def _listing(directory: Path, *, dirs: bool = True) -> list[Path]:
    try:
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError as exc:
        raise StorageError(f"cannot list {directory}: {exc.strerror}") from exc
    return [entry for entry in entries if entry.is_dir() == dirs]


def report_lines(report: VerifyReport) -> list[str]:
    """``report.lines()`` with the first two lines worded for a receiver store."""
    lines = report.lines()
    devices = "one device" if report.device is not None else "its devices"
    lines[0] = f"{report.root}: evidence receiver store ({devices})"
    if report.trust is Trust.SELF:
        lines[1] = (
            "trust: the keys in the store's trust/: this checks integrity, not authenticity "
            "(whoever can rewrite the whole store can also replace those keys)"
        )
    return lines


_UNFINISHED: Final = (
    "has no manifest: the receiver stopped while making it final; starting it finishes the job"
)
