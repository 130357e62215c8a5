"""The device's append-only, hash-chained audit log (format and verifier: ``device.auditformat``).

Each ``append`` is one ``write()`` of one whole line to a file opened with ``O_APPEND``, so a
process crash never tears a line; a power loss may, within the records not yet fsynced. How often
to fsync is the caller's choice (``AuditSync``). ``AuditLog.open`` repairs a torn tail and says so
in the log itself: the damaged bytes are saved to ``<log>.torn-<offset>-<sha256[:16]>``, cut
off, and an ``audit_recovered`` record names them. Recovery never destroys a byte and never
happens silently, even when it is itself interrupted: any saved tail that no record names yet is
recorded at the next open.
"""

from __future__ import annotations

import os
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

from device.auditformat import (
    AUDIT_FORMAT,
    GENESIS_PREV,
    AuditRecord,
    JsonValue,
    checkpoint_message,
    encode_line,
    utc_text,
)
from device.auditrepair import file_digest, repair_tail, unrecorded_sidecars
from device.durable import fsync_fd, storage_error, write_all
from device.errors import StorageError
from device.signing import Signer
from protocol.ids import is_safe_id


class AuditSync(StrEnum):
    """When appended records reach stable storage."""

    EVERY_APPEND = "every_append"  # fsync each record: nothing acknowledged is ever lost
    EXPLICIT = "explicit"  # fsync only in sync()/close(): survives a crash, not a power loss


class AuditLog:
    """An open audit log; make one with ``AuditLog.open``."""

    def __init__(
        self, path: Path, fd: int, device_id: str, last: AuditRecord | None, *, sync: AuditSync
    ) -> None:
        self._path, self._fd, self._device_id, self._sync = path, fd, device_id, sync
        self._offset = os.fstat(fd).st_size
        self._next_seq = 0 if last is None else last.seq + 1
        self._head = GENESIS_PREV if last is None else last.hash
        self._unsynced = 0
        self._failed = False
        self._signer: Signer | None = None
        self._checkpoint_every = 0
        self._since_checkpoint = 0
        self.recovered: tuple[AuditRecord, ...] = ()
        """The ``audit_recovered`` records written by ``open``: the caller may want to alert."""

    @classmethod
    def open(
        cls,
        path: Path,
        device_id: str,
        *,
        utc: datetime,
        mono_s: float,
        key_id: str | None = None,
        signer: Signer | None = None,
        sync: AuditSync = AuditSync.EVERY_APPEND,
        checkpoint_every: int = 0,
    ) -> AuditLog:
        """Open (or create, with a genesis record) the log of ``device_id`` for appending.

        ``utc``/``mono_s`` date the records ``open`` itself may write (genesis, recovery).
        ``key_id`` (or ``signer.key_id``) goes into the genesis record. With a ``signer`` and
        ``checkpoint_every`` N > 0, a signed checkpoint follows every N records. ``ConfigError``
        if the log belongs to another device; ``EvidenceError`` if the file is not an audit log.
        """
        if not is_safe_id(device_id):
            raise ValueError(f"device ID {device_id!r} is not a valid ID")
        if signer is not None and key_id not in (None, signer.key_id):
            raise ValueError(f"key_id {key_id} differs from the signer's {signer.key_id}")
        existed = path.exists()
        fd = _open_append(path)
        try:
            tail, saved = repair_tail(path, fd, device_id, existed=existed)
            log = cls(path, fd, device_id, tail.last, sync=sync)
            log._signer, log._checkpoint_every = signer, checkpoint_every
            if log._next_seq == 0:
                genesis_key = key_id if signer is None else signer.key_id
                fields: dict[str, JsonValue] = {"device": device_id, "key_id": genesis_key}
                log._write("genesis", utc, mono_s, fields | {"format": AUDIT_FORMAT})
            reasons = {saved: tail.problem} if saved else {}
            log.recovered = tuple(log._record_sidecars(utc, mono_s, reasons))
            log.sync()
        except BaseException:
            os.close(fd)
            raise
        return log

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def device_id(self) -> str:
        """The device whose log this is."""
        return self._device_id

    @property
    def next_seq(self) -> int:
        """The seq the next record gets (also the number of records in the log)."""
        return self._next_seq

    @property
    def head(self) -> str:
        """The hash of the last record: commits to the whole log."""
        return self._head

    @property
    def unsynced(self) -> int:
        """Records written but not yet fsynced."""
        return self._unsynced

    def append(
        self, kind: str, utc: datetime, mono_s: float, /, **fields: JsonValue
    ) -> AuditRecord:
        """Append one record; fsynced now under ``EVERY_APPEND``, else by the next ``sync``.

        ``kind`` is lowercase (``[a-z][a-z0-9_.-]*``); ``fields`` are JSON values whose names are
        not ``seq utc mono_s kind prev hash``; ValueError otherwise (nothing is written).
        """
        record = self._write(kind, utc, mono_s, fields)
        self._since_checkpoint += 1
        if (
            self._signer
            and self._checkpoint_every
            and (self._since_checkpoint >= self._checkpoint_every)
        ):
            self.checkpoint(utc, mono_s)
        return record

    @property
    def can_sign(self) -> bool:
        """Whether the log was opened with a signer, so ``checkpoint`` can be used."""
        return self._signer is not None

    def checkpoint(self, utc: datetime, mono_s: float) -> AuditRecord:
        """Append a checkpoint signed by the device key, committing to every record before it."""
        if self._signer is None:
            raise ValueError("a checkpoint needs the log to be opened with a signer")
        signature = self._signer.sign(checkpoint_message(self._head))
        fields: dict[str, JsonValue] = {"key_id": self._signer.key_id, "sig": signature.hex()}
        record = self._write("checkpoint", utc, mono_s, fields)
        self._since_checkpoint = 0
        return record

    def sync(self) -> None:
        """Fsync the records written so far."""
        self._check_usable()
        if self._unsynced:
            try:
                fsync_fd(self._fd, self._path)
            except StorageError:
                self._failed = True
                raise
            self._unsynced = 0

    def close(self) -> None:
        """Fsync and close; closing twice is harmless."""
        if self._fd < 0:
            return
        try:
            if not self._failed:
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    def _write(
        self, kind: str, utc: datetime, mono_s: float, fields: dict[str, JsonValue]
    ) -> AuditRecord:
        self._check_usable()
        utc_field = utc_text(utc)
        line, digest = encode_line(self._next_seq, utc_field, mono_s, kind, fields, prev=self._head)
        try:
            write_all(self._fd, line, self._path)
        except StorageError:
            # Part of the line may be in the file: only a reopen (which repairs the tail) is safe.
            self._failed = True
            raise
        record = AuditRecord(
            self._next_seq, utc_field, float(mono_s), kind, fields, self._head, digest, self._offset
        )
        self._offset += len(line)
        self._next_seq += 1
        self._head = digest
        self._unsynced += 1
        if self._sync is AuditSync.EVERY_APPEND:
            self.sync()
        return record

    def _check_usable(self) -> None:
        if self._fd < 0:
            raise ValueError(f"audit log {self._path} is closed")
        if self._failed:
            raise StorageError(
                f"audit log {self._path} had a write failure; reopen it to repair its tail"
            )

    def _record_sidecars(
        self, utc: datetime, mono_s: float, reasons: dict[str, str]
    ) -> list[AuditRecord]:
        records = []
        for offset, sidecar in unrecorded_sidecars(self._path):
            size, digest = file_digest(sidecar)
            reason = reasons.get(sidecar.name, "the recovery that saved them was interrupted")
            fields: dict[str, JsonValue] = {
                "dropped_bytes": size,
                "offset": offset,
                "dropped_sha256": digest,
                "saved_as": sidecar.name,
                "reason": reason,
            }
            records.append(self._write("audit_recovered", utc, mono_s, fields))
        return records


def _open_append(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise storage_error("opening audit log", path, exc) from exc
