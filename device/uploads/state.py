"""The upload manager's state on disk: one small JSON file per segment, and verified receipts.

Layout under the state directory (for example ``DATA/uploads/``; docs/upload-state.md):

    segments/{recording}.seg-{index:06d}.json   status of a segment not yet verified
    verified/{recording}.seg-{index:06d}.json   receipt of a verified upload (kept for good)

Every file is written atomically (temporary file, fsync, rename, directory fsync; without the
fsyncs when not durable). Only statuses and IDs are kept, never per-chunk progress: a re-offer
makes the receiver answer with its committed offset, which is authoritative.

A file that does not decode is treated as absent: a lost status only costs a re-offer (the
receiver answers ``verified`` or ``rejected`` again), and a segment is deleted only on a receipt
that decodes and names the segment's exact upload ID and SHA-256.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final, Literal, TypeAlias, TypeVar

import msgspec

from device.durable import atomic_write_bytes, storage_error
from protocol.manifest import SignedManifest

SEGMENTS_DIR: Final = "segments"
VERIFIED_DIR: Final = "verified"
STATE_VERSION: Final = 1
_MAX_FILE: Final = 256 * 1024
_T = TypeVar("_T")
RecordStatus: TypeAlias = Literal["queued", "sending", "rejected"]


class SegmentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``segments/*.json``: a segment the device still holds, and how its upload stands.

    ``attempts`` counts consecutive failed attempts (it sets the back-off); ``code`` and
    ``message`` are the last failure's, or the rejection's.
    """

    v: Literal[1] = STATE_VERSION
    upload_id: str
    recording: str
    index: int
    status: RecordStatus
    attempts: int = 0
    code: str | None = None
    message: str | None = None
    updated_mono_s: float


class Receipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``verified/*.json``: proof, kept after the segment is deleted, that the receiver verified it.

    ``sha256`` and ``size`` are the manifest's, which the verified ack matched; the signed
    manifest itself is kept so the deleted segment stays described and checkable.
    """

    v: Literal[1] = STATE_VERSION
    upload_id: str
    recording: str
    index: int
    size: int
    sha256: str
    verified_mono_s: float
    verified_utc: datetime | None = None
    signed_manifest: SignedManifest


def segment_file_name(recording: str, index: int) -> str:
    """The state and receipt file name of a segment (IDs never contain ``/``)."""
    return f"{recording}.seg-{index:06d}.json"


class UploadStateDir:
    """Reads and writes the files above. ``StorageError`` for any OS failure."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.segments = root / SEGMENTS_DIR
        self.verified = root / VERIFIED_DIR
        self._durable = durable
        for directory in (self.segments, self.verified):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error("creating", directory, exc) from exc

    # -- segment records ---------------------------------------------------------------------

    def read_record(self, recording: str, index: int) -> SegmentRecord | None:
        """The segment's status file, or ``None`` if absent or undecodable."""
        return _read(self.segments / segment_file_name(recording, index), SegmentRecord)

    def write_record(self, record: SegmentRecord) -> None:
        """Replace the segment's status file atomically."""
        path = self.segments / segment_file_name(record.recording, record.index)
        self._write(path, msgspec.json.encode(record))

    def remove_record(self, recording: str, index: int) -> None:
        """Forget a segment's status (after its receipt exists). Idempotent."""
        path = self.segments / segment_file_name(recording, index)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error("deleting", path, exc) from exc

    def records(self) -> list[SegmentRecord]:
        """Every status file that decodes, sorted by file name."""
        found = []
        for path in sorted(self.segments.glob("*.json")):
            record = _read(path, SegmentRecord)
            if record is not None:
                found.append(record)
        return found

    # -- receipts ------------------------------------------------------------------------------

    def read_receipt(self, recording: str, index: int) -> Receipt | None:
        """The segment's receipt, or ``None`` if absent or undecodable."""
        return _read(self.verified / segment_file_name(recording, index), Receipt)

    def write_receipt(self, receipt: Receipt) -> None:
        """Write a receipt atomically and durably (always fsynced: deletion relies on it)."""
        path = self.verified / segment_file_name(receipt.recording, receipt.index)
        atomic_write_bytes(path, msgspec.json.encode(receipt))

    def receipt_count(self) -> int:
        """Receipts on disk."""
        return sum(1 for _ in self.verified.glob("*.json"))

    # -- internals -----------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        atomic_write_bytes(path, data, sync=self._durable)


def _read(path: Path, kind: type[_T]) -> _T | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc
    if len(data) > _MAX_FILE:
        return None
    try:
        return msgspec.json.decode(data, type=kind, strict=True)
    except msgspec.DecodeError:  # ValidationError included
        return None
