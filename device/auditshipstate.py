"""The audit shipper's file work: its state file, and reading the audit log without writing it.

``<state_dir>/audit-ship.json`` holds the offset the receiver last acknowledged, the hash of the
line that ends there (so a log cut or replaced since is noticed before anything is sent), and the
problem that stopped shipping, if any. It is replaced atomically (temporary file, fsync, rename,
directory fsync; without the fsyncs when not durable). A file that does not decode counts as
absent: the receiver's next ack says where its copy stands.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from device.durable import atomic_write_bytes, storage_error

log = logging.getLogger(__name__)

STATE_FILE: Final = "audit-ship.json"
_SUFFIX: Final = re.compile(rb',"hash":"([0-9a-f]{64})"\}\n\Z')
_SUFFIX_BYTES: Final = 76
"""``,"hash":"<64 hex>"}`` and the newline: how every audit line ends."""
_MAX_STATE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ShipProblem:
    """Why shipping stopped: ``remote`` for the receiver's rejection, else found by the device.

    ``code`` is the receiver's rejection code, or a local one (``log_shorter``, ``diverged``,
    ``receiver_ahead``, ``line_too_long``); ``offset`` the byte of the log it concerns.
    """

    code: str
    message: str
    offset: int
    remote: bool


class ShipRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The contents of ``audit-ship.json``."""

    v: int = 1
    acked: int = 0
    head: str | None = None
    problem: ShipProblem | None = None


def load_record(path: Path) -> ShipRecord:
    """The state file; a fresh record if absent or damaged; ``StorageError`` if unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ShipRecord()
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc
    try:
        record = msgspec.json.decode(data[: _MAX_STATE + 1], type=ShipRecord, strict=True)
    except msgspec.DecodeError:  # ValidationError included
        record = None
    if record is None or record.acked < 0 or (record.acked == 0) != (record.head is None):
        log.warning("%s is damaged; the receiver's next ack repositions the shipper", path)
        return ShipRecord()
    return record


def save_record(path: Path, record: ShipRecord, *, durable: bool) -> None:
    """Replace the state file atomically (and durably if ``durable``); ``StorageError`` if not."""
    atomic_write_bytes(path, msgspec.json.encode(record), sync=durable)


def log_size(path: Path) -> int:
    """Bytes in the log (0 if it does not exist yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise storage_error("reading the size of", path, exc) from exc


def read_at(path: Path, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``path`` from ``offset`` (fewer at the end of the file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error("opening", path, exc) from exc
    try:
        chunks, done = [], 0
        while done < size and (chunk := os.pread(fd, size - done, offset + done)):
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc
    finally:
        os.close(fd)


def line_hash(data: bytes) -> str | None:
    """The ``hash`` of the line ``data`` ends with, or ``None`` if it does not end with one."""
    match = _SUFFIX.search(data[-_SUFFIX_BYTES:])
    return None if match is None else match.group(1).decode("ascii")


def hash_at(path: Path, end: int) -> str | None:
    """The hash of the line of ``path`` that ends at byte ``end``; ``None`` at 0 or if none.

    A line holds no newline but its last byte, so a match proves ``end`` is a line boundary.
    """
    if end < _SUFFIX_BYTES:
        return None
    return line_hash(read_at(path, end - _SUFFIX_BYTES, _SUFFIX_BYTES))
