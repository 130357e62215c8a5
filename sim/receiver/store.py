"""The evidence receiver's directory: verified segments, uploads in progress, receipts, keys.

Layout (docs/receiver.md)::

    receiver.json                       marks the directory: {"v":1,"kind":"receiver"}
    devices/{device}/recordings/{recording}/
        seg-NNNNNN.bwcseg               a verified segment, byte for byte the device's
        seg-NNNNNN.manifest.json        its signed manifest envelope, as the device keeps it
    devices/{device}/audit.log          the device's audit log as shipped so far (``audit.py``)
    incoming/{upload_id}.part           the committed prefix of an upload in progress
    incoming/{upload_id}.state.json     its offer (written atomically when it is accepted)
    receipts/{upload_id}.json           one per verified upload: what, where, when
    trust/{device}.pub                  trusted device keys (``device.signing.TrustStore``)

Durability: a ``.part`` grows only by appends of committed bytes and is fsynced before any ack
that covers them (``IncomingFile.sync``); everything else is written atomically. Completing an
upload fsyncs the ``.part``, renames it into ``devices/``, writes the manifest, then the receipt,
then removes the state file, so a crash at any step leaves either an upload that resumes or one
that ``recover`` finishes. Nothing here deletes evidence.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from device.durable import atomic_write_bytes, fsync_directory, fsync_fd, storage_error, write_all
from device.errors import StorageError
from device.store import RECORDINGS_DIR, manifest_path, read_signed_manifest, segment_name
from protocol.errors import DecodeError
from protocol.ids import SafeId, Sha256Hex, UtcTime
from protocol.jsoncodec import decode_json
from protocol.manifest import SegmentManifest, SignedManifest
from protocol.upload import Hasher, Offer

MARKER_FILE: Final = "receiver.json"
DEVICES_DIR: Final = "devices"
INCOMING_DIR: Final = "incoming"
RECEIPTS_DIR: Final = "receipts"
TRUST_DIR: Final = "trust"
PART_SUFFIX: Final = ".part"
STATE_SUFFIX: Final = ".state.json"
AUDIT_FILE: Final = "audit.log"
_READ_BLOCK: Final = 1024 * 1024
_MAX_DOC: Final = 128 * 1024
T = TypeVar("T")


class ReceiverStorageError(StorageError):
    """A write failed; ``full`` when the cause is a full disk (answered ``storage_full``)."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class StoreMarker(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The contents of ``receiver.json``."""

    v: int = 1
    kind: str = "receiver"


class UploadState(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An upload in progress: the device that offered it, and its first accepted offer."""

    v: int = 1
    device: SafeId
    offer: Offer


class Receipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The record of a verified upload; the receiver answers ``verified`` from it ever after."""

    v: int = 1
    upload_id: str
    device: SafeId
    recording: SafeId
    index: int
    size: int
    sha256: Sha256Hex
    key_id: str
    verified_utc: UtcTime
    segment: str  # path relative to the store root


@dataclass(frozen=True, slots=True)
class Resumed:
    """An upload rebuilt from disk: its state, the ``.part`` length and a hasher fed those bytes."""

    state: UploadState
    committed: int
    hasher: Hasher


class IncomingFile:
    """The open ``.part`` of one upload: appends, then one fsync before the acks that cover them."""

    def __init__(self, path: Path, *, fresh: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise _error("opening", path, exc) from exc
        try:
            self._length = os.fstat(self._fd).st_size
        except OSError as exc:
            self.close()
            raise _error("reading the size of", path, exc) from exc
        self.durable_length = self._length
        """Bytes known to be on stable storage: what a ``failed`` ack may promise."""
        self._dirty = False

    def append(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (the committed length); durable only after ``sync``."""
        try:
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise _error("seeking in", self.path, exc) from exc
        try:
            write_all(self._fd, data, self.path)
        except StorageError as exc:
            full = isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
            raise ReceiverStorageError(str(exc), full=full) from exc
        self._length = max(self._length, offset + len(data))
        self._dirty = True

    def truncate(self) -> None:
        """Drop every byte (after a hash mismatch) and make that durable."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise _error("truncating", self.path, exc) from exc
        self._length = 0
        self.durable_length = 0
        self._dirty = True
        self.sync()

    def sync(self) -> None:
        """fsync what was appended since the last sync (nothing to do if nothing was)."""
        if self._dirty:
            fsync_fd(self._fd, self.path)
            self._dirty = False
            self.durable_length = self._length

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class ReceiverStore:
    """The receiver's directory (see the module docstring); creates it if needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = root / DEVICES_DIR
        self.incoming = root / INCOMING_DIR
        self.receipts = root / RECEIPTS_DIR
        self.trust = root / TRUST_DIR
        try:
            for directory in (root, self.devices, self.incoming, self.receipts, self.trust):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error("creating the receiver store", root, exc) from exc
        if not (root / MARKER_FILE).exists():
            atomic_write_bytes(root / MARKER_FILE, msgspec.json.encode(StoreMarker()))

    # -- where things go ---------------------------------------------------------------------

    def segment_path(self, manifest: SegmentManifest) -> Path:
        """Where the verified segment of ``manifest`` lives (its manifest sits beside it)."""
        recording = self.devices / manifest.device / RECORDINGS_DIR / manifest.recording
        return recording / segment_name(manifest.index)

    def audit_path(self, device: str) -> Path:
        """Where the received audit log of ``device`` lives (beside its ``recordings/``)."""
        return self.devices / device / AUDIT_FILE

    def _part(self, upload_id: str) -> Path:
        return self.incoming / f"{upload_id}{PART_SUFFIX}"

    def _state(self, upload_id: str) -> Path:
        return self.incoming / f"{upload_id}{STATE_SUFFIX}"

    def _receipt(self, upload_id: str) -> Path:
        return self.receipts / f"{upload_id}.json"

    # -- reading -----------------------------------------------------------------------------

    def receipt(self, upload_id: str) -> Receipt | None:
        """The receipt of a verified upload, or ``None``."""
        return read_document(self._receipt(upload_id), Receipt)

    def state(self, upload_id: str) -> UploadState | None:
        """The stored state of an upload in progress, or ``None``."""
        return read_document(self._state(upload_id), UploadState)

    def stored_manifest(self, manifest: SegmentManifest) -> SignedManifest | None:
        """The signed manifest already stored for that segment slot, or ``None``."""
        path = manifest_path(self.segment_path(manifest))
        return read_signed_manifest(path) if path.exists() else None

    def segment_intact(self, receipt: Receipt) -> bool:
        """Whether the receipt's segment file is still there with its size (a cheap check)."""
        try:
            return (self.root / receipt.segment).stat().st_size == receipt.size
        except OSError:
            return False

    def durable_length(self, upload_id: str) -> int:
        """Bytes of the upload's ``.part`` (0 if none)."""
        try:
            return self._part(upload_id).stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise _error("reading the size of", self._part(upload_id), exc) from exc

    def resume(self, upload_id: str) -> Resumed | None:
        """Rebuild an upload in progress: its stored offer, and SHA-256 over the ``.part`` bytes."""
        state = self.state(upload_id)
        if state is None:
            return None
        hasher = hashlib.sha256()
        committed = 0
        try:
            with self._part(upload_id).open("rb") as file:
                while block := file.read(_READ_BLOCK):
                    hasher.update(block)
                    committed += len(block)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error("reading", self._part(upload_id), exc) from exc
        return Resumed(state, committed, hasher)

    # -- writing -----------------------------------------------------------------------------

    def begin(self, device: str, offer: Offer) -> IncomingFile:
        """Record a new upload durably (state first, then an empty ``.part``) and open it."""
        document = msgspec.json.encode(UploadState(device=device, offer=offer))
        atomic_write_bytes(self._state(offer.upload_id), document)
        # A .part without a state file belongs to no one: it starts over.
        return self.open_part(offer.upload_id, fresh=True)

    def open_part(self, upload_id: str, *, fresh: bool = False) -> IncomingFile:
        """Open (creating it durably if needed) the ``.part`` of an upload in progress."""
        path = self._part(upload_id)
        created = fresh or not path.exists()
        incoming = IncomingFile(path, fresh=fresh)
        if created:
            fsync_directory(self.incoming)
        return incoming

    def complete(
        self, incoming: IncomingFile, state: UploadState, sha256: str, utc: datetime
    ) -> Receipt:
        """Make a verified upload final: segment and manifest into ``devices/``, then the receipt.

        The ``.part`` has been checked against the manifest's size and SHA-256 by the protocol.
        """
        incoming.sync()
        incoming.close()
        signed = state.offer.signed_manifest
        manifest = signed.decode()
        target = self.segment_path(manifest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            incoming.path.replace(target)
        except OSError as exc:
            raise _error("moving into place", target, exc) from exc
        fsync_directory(target.parent)
        fsync_directory(self.incoming)
        return self._finish(state, target, sha256, utc)

    def _finish(self, state: UploadState, target: Path, sha256: str, utc: datetime) -> Receipt:
        signed = state.offer.signed_manifest
        manifest = signed.decode()
        atomic_write_bytes(manifest_path(target), msgspec.json.encode(signed))
        receipt = Receipt(
            upload_id=state.offer.upload_id,
            device=manifest.device,
            recording=manifest.recording,
            index=manifest.index,
            size=manifest.size,
            sha256=sha256,
            key_id=signed.key_id,
            verified_utc=utc,
            segment=target.relative_to(self.root).as_posix(),
        )
        atomic_write_bytes(self._receipt(receipt.upload_id), msgspec.json.encode(receipt))
        self._forget(receipt.upload_id)
        return receipt

    def _forget(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state(upload_id).unlink()
        fsync_directory(self.incoming)

    def recover(self, utc: datetime) -> list[Receipt]:
        """Finish every completion a crash interrupted (segment in place, receipt not written)."""
        finished = []
        for path in sorted(self.incoming.glob(f"*{STATE_SUFFIX}")):
            upload_id = path.name.removesuffix(STATE_SUFFIX)
            state = self.state(upload_id)
            if state is None or self._part(upload_id).exists():
                continue  # still in progress: resumed at its next offer or chunk
            manifest = state.offer.signed_manifest.decode()
            target = self.segment_path(manifest)
            if target.is_file() and target.stat().st_size == manifest.size:
                # Only a verified .part is ever renamed there, so it matched the manifest.
                finished.append(self._finish(state, target, manifest.sha256, utc))
        return finished


def read_document(path: Path, kind: type[T]) -> T | None:
    """Decode a JSON document of the store; ``None`` if absent, ``ReceiverStorageError`` if bad."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error("reading", path, exc) from exc
    try:
        return decode_json(data, kind, max_bytes=_MAX_DOC)
    except DecodeError as exc:
        raise ReceiverStorageError(f"{path} is damaged ({exc}); move it aside") from exc


def _error(what: str, path: Path, exc: OSError) -> ReceiverStorageError:
    return ReceiverStorageError(str(storage_error(what, path, exc)), full=exc.errno == errno.ENOSPC)
