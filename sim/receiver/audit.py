"""Received audit logs: each device's ``audit.log``, appended range by range after chain checks.

The receiver keeps ``devices/{device}/audit.log``, byte for byte the prefix of the device's log
that it has shipped (``protocol.auditship``; docs/protocol.md, "Audit log shipping"). A range is
appended only when its offset is the copy's length, and only after its lines are checked to
continue the copy's hash chain (``device.auditformat.extend_chain``: hashes, links, seq, genesis
naming the topic's device at offset 0, and every checkpoint's signature against the device's
trusted keys). The bytes are fsynced before the ack that counts them is returned. Everything else
is answered with the copy's length and head, so a device resumes from any ack and a duplicate is
harmless. A range that breaks the chain is rejected for good and nothing of it is stored.

Restart: the copy's length, next seq and head come from its last line, read at start-up
(``recover``) or at the first range of a device; a torn tail left by a crash mid-append (bytes
never acknowledged) is cut off to the last complete line and saved beside the log as
``audit.log.torn-<offset>-<sha256[:16]>`` (``device.auditrepair``), as a device does.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from device.auditformat import AuditFault, AuditProblem, extend_chain
from device.auditrepair import repair_tail
from device.durable import fsync_directory, fsync_fd, storage_error, write_all
from device.errors import ConfigError, EvidenceError, StorageError
from protocol.auditship import (
    CODE_BAD_GENESIS,
    CODE_BAD_SIGNATURE,
    CODE_CHAIN_BROKEN,
    CODE_STORAGE_ERROR,
    CODE_STORAGE_FULL,
    CODE_UNKNOWN_DEVICE,
    AuditAck,
    AuditAckState,
    AuditRange,
    AuditRangeCrcError,
    decode_audit_range,
    encode_audit_ack,
)
from protocol.errors import DecodeError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, Topics
from sim.receiver.store import AUDIT_FILE, ReceiverStorageError, ReceiverStore
from sim.receiver.trust import TrustPolicy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditCounters:
    """What the audit inbox has seen since the receiver started."""

    ranges: int = 0
    corrupt: int = 0  # CRC mismatch: dropped, never answered
    undecodable: int = 0  # not a range message: dropped
    appended: int = 0  # ranges appended
    appended_bytes: int = 0
    resends: int = 0  # ranges not at the copy's length (duplicates, gaps): answered ``resend``
    rejected: int = 0
    storage_errors: int = 0


@dataclass(frozen=True, slots=True)
class AuditCopy:
    """Where a device's copy stands: bytes, records, and the hash of its last line."""

    length: int
    records: int
    head: str | None


_EMPTY = AuditCopy(0, 0, None)


class AuditInbox:
    """Every device's received audit log in one ``ReceiverStore`` (see the module docstring)."""

    def __init__(self, store: ReceiverStore, trust: TrustPolicy, topics: Topics) -> None:
        self.store = store
        self.trust = trust
        self.topics = topics
        self.counters = AuditCounters()
        self._copies: dict[str, AuditCopy] = {}

    def recover(self) -> list[str]:
        """Read every stored copy's position, cutting off torn tails; the devices whose log was
        cut. A copy that cannot be read is logged and left for its next range to report."""
        cut = []
        for path in sorted(self.store.devices.glob(f"*/{AUDIT_FILE}")):
            device = path.parent.name
            try:
                if self._load(device):
                    cut.append(device)
            except ReceiverStorageError as exc:
                log.warning("audit log of %s cannot be read: %s", device, exc)
        return cut

    def copy(self, device: str) -> AuditCopy:
        """Where ``device``'s copy stands; ``ReceiverStorageError`` if it cannot be read."""
        if device not in self._copies:
            self._load(device)
        return self._copies[device]

    def on_range(self, device: str, payload: bytes) -> list[Publish]:
        """Handle one message on ``device``'s ``audit`` topic; the ack to publish, if any."""
        received = self._decode(device, payload)
        if received is None:
            return []
        try:
            copy = self.copy(device)
        except ReceiverStorageError as exc:
            return [self._failed(device, received.offset, _EMPTY, exc)]
        keys = self.trust.keys(device)
        if not keys:
            text = f"device {device} has no trusted key ({self.trust.mode.value} trust)"
            return [self._reject(device, received, copy, CODE_UNKNOWN_DEVICE, text)]
        if received.offset != copy.length:
            self.counters.resends += 1
            return [self._ack(device, received.offset, "resend", copy)]
        if not received.data:
            return [self._ack(device, received.offset, "stored", copy)]
        return [self._append(device, received, copy, keys)]

    def _decode(self, device: str, payload: bytes) -> AuditRange | None:
        try:
            received = decode_audit_range(payload)
        except AuditRangeCrcError:
            self.counters.corrupt += 1
            return None
        except DecodeError as exc:
            self.counters.undecodable += 1
            log.debug("undecodable audit range from %s: %s", device, exc)
            return None
        self.counters.ranges += 1
        return received

    # -- appending ---------------------------------------------------------------------------

    def _append(
        self, device: str, received: AuditRange, copy: AuditCopy, keys: tuple[bytes, ...]
    ) -> Publish:
        check = extend_chain(
            received.data,
            offset=copy.length,
            next_seq=copy.records,
            head=copy.head,
            public_keys=keys,
        )
        if check.fault is not None:
            code, text = _rejection(check.fault)
            return self._reject(device, received, copy, code, text)
        if copy.length == 0 and check.device != device:
            text = f"line 1 names device {check.device}, not {device}: another device's log"
            return self._reject(device, received, copy, CODE_BAD_GENESIS, text)
        try:
            self._write(self.store.audit_path(device), copy.length, received.data)
        except ReceiverStorageError as exc:
            return self._failed(device, received.offset, copy, exc)
        grown = AuditCopy(check.end, copy.records + check.records, check.head)
        self._copies[device] = grown
        self.counters.appended += 1
        self.counters.appended_bytes += len(received.data)
        return self._ack(device, received.offset, "stored", grown)

    def _write(self, path: Path, length: int, data: bytes) -> None:
        """Append ``data`` at ``length`` and fsync (cutting any leftover of a failed append)."""
        created = not path.exists()
        try:
            if created:
                path.parent.mkdir(exist_ok=True)
                fsync_directory(path.parent.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except (OSError, StorageError) as exc:
            raise _storage_error("creating", path, exc) from exc
        try:
            if os.fstat(fd).st_size != length:
                os.ftruncate(fd, length)
            os.lseek(fd, length, os.SEEK_SET)
            write_all(fd, data, path)
            fsync_fd(fd, path)
            if created:
                fsync_directory(path.parent)
        except (OSError, StorageError) as exc:
            raise _storage_error("appending to", path, exc) from exc
        finally:
            os.close(fd)

    # -- reading a copy ----------------------------------------------------------------------

    def _load(self, device: str) -> bool:
        """Read the copy's position, repairing a torn tail; whether bytes were cut off."""
        path = self.store.audit_path(device)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            self._copies[device] = _EMPTY
            return False
        except OSError as exc:
            raise _storage_error("opening", path, exc) from exc
        try:
            tail, saved = repair_tail(path, fd, device, existed=True)
        except (StorageError, EvidenceError, ConfigError) as exc:
            raise _storage_error("repairing", path, exc) from exc
        finally:
            os.close(fd)
        last = tail.last
        self._copies[device] = (
            _EMPTY if last is None else AuditCopy(tail.end, last.seq + 1, last.hash)
        )
        if saved is not None:
            log.warning(
                "audit log of %s: cut a torn tail (%s), saved as %s", device, tail.problem, saved
            )
        return saved is not None

    # -- answers -----------------------------------------------------------------------------

    def _ack(
        self,
        device: str,
        offset: int,
        state: AuditAckState,
        copy: AuditCopy,
        *,
        code: str | None = None,
        message: str | None = None,
    ) -> Publish:
        ack = AuditAck(
            offset=offset,
            state=state,
            length=copy.length,
            head=copy.head,
            code=code,
            message=None if message is None else message[:500],
        )
        topic = self.topics.device(device, DeviceChannel.AUDIT_ACK)
        return Publish(topic, encode_audit_ack(ack))

    def _reject(
        self, device: str, received: AuditRange, copy: AuditCopy, code: str, text: str
    ) -> Publish:
        self.counters.rejected += 1
        log.warning(
            "rejected the audit range at byte %d from %s: %s: %s",
            received.offset,
            device,
            code,
            text,
        )
        return self._ack(device, received.offset, "rejected", copy, code=code, message=text)

    def _failed(
        self, device: str, offset: int, copy: AuditCopy, exc: ReceiverStorageError
    ) -> Publish:
        self.counters.storage_errors += 1
        log.error("audit log of %s: %s", device, exc)
        code = CODE_STORAGE_FULL if exc.full else CODE_STORAGE_ERROR
        return self._ack(device, offset, "failed", copy, code=code, message=str(exc))


def _rejection(fault: AuditFault) -> tuple[str, str]:
    seq = "?" if fault.seq is None else fault.seq
    text = f"line {fault.line} (seq {seq}, byte {fault.offset}): {fault.problem}: {fault.detail}"
    if fault.problem is AuditProblem.BAD_SIGNATURE:
        return CODE_BAD_SIGNATURE, text
    if fault.problem is AuditProblem.BAD_GENESIS:
        return CODE_BAD_GENESIS, text
    return CODE_CHAIN_BROKEN, text


def _storage_error(what: str, path: Path, exc: Exception) -> ReceiverStorageError:
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    full = isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    if isinstance(exc, OSError):
        return ReceiverStorageError(str(storage_error(what, path, exc)), full=full)
    return ReceiverStorageError(f"{what} {path}: {exc}", full=full)
