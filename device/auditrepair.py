"""Repairing the tail of an audit log after a crash, without destroying or hiding a byte.

``repair_tail`` walks back from the end of the file to the last line that verifies on its own,
saves everything after it to ``<log>.torn-<offset>-<sha256[:16]>`` (fsynced), and truncates.
``unrecorded_sidecars`` lists saved tails no ``audit_recovered`` record names yet, so the log
can record them even when the recovery that saved them was interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from device.auditformat import MAX_LINE_BYTES, AuditProblem, AuditRecord, LineError, parse_line
from device.durable import atomic_write_chunks, fsync_directory, fsync_fd, storage_error
from device.errors import ConfigError, EvidenceError

_CHUNK: Final = 64 * 1024
_SIDECAR: Final = re.compile(r"\.torn-(?P<offset>\d+)-[0-9a-f]{16}\Z")


@dataclass(frozen=True, slots=True)
class Tail:
    """Where the valid lines of a log end, the last valid record, and why the rest is bad."""

    end: int
    last: AuditRecord | None
    problem: str


def _pread(fd: int, size: int, offset: int, path: Path) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise storage_error("reading audit log", path, exc) from exc


def _line_start(fd: int, end: int, path: Path) -> int:
    """Start of the line that ends at ``end``: just after the previous newline, or 0."""
    pos = end - 1  # the byte at end - 1 is this line's own newline (or a torn byte)
    while pos > 0:
        low = max(0, pos - _CHUNK)
        found = _pread(fd, pos - low, low, path).rfind(b"\n")
        if found >= 0:
            return low + found + 1
        pos = low
    return 0


def _valid_tail(fd: int, size: int, path: Path) -> Tail:
    """Walk back from the end to the last line that verifies on its own."""
    end, problem = size, ""
    while end > 0:
        start = _line_start(fd, end, path)
        try:
            return Tail(end, _parse_at(fd, start, end, path), problem)
        except LineError as exc:
            problem = problem or f"{exc.problem} at byte {start}: {exc.detail}"
            end = start
    return Tail(0, None, problem)


def _parse_at(fd: int, start: int, end: int, path: Path) -> AuditRecord:
    if end - start > MAX_LINE_BYTES:
        raise LineError(AuditProblem.BAD_FORMAT, f"a line of {end - start} bytes")
    return parse_line(_pread(fd, end - start, start, path), start)


def _looks_like_log(fd: int, path: Path) -> bool:
    first = _pread(fd, 9, 0, path)
    return b'{"seq":0,'.startswith(first) or first.startswith(b'{"seq":0,')


def _check_device(fd: int, path: Path, device_id: str) -> None:
    try:
        genesis = parse_line(_read_line_at(fd, 0, path), 0)
    except LineError:
        return  # a damaged first line is verify_audit's to report; the device keeps logging
    device = genesis.fields.get("device")
    if genesis.kind == "genesis" and device != device_id:
        raise ConfigError(f"audit log {path} belongs to device {device!r}, not {device_id!r}")


def _read_line_at(fd: int, offset: int, path: Path) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE_BYTES:
        chunk = _pread(fd, _CHUNK, offset + len(data), path)
        if not chunk:
            break
        data += chunk
    newline = data.find(b"\n")
    return data if newline < 0 else data[: newline + 1]


def _save_sidecar(path: Path, fd: int, start: int, stop: int) -> str:
    digest = hashlib.sha256()
    for chunk in _ranged(fd, start, stop, path):
        digest.update(chunk)
    sidecar = path.with_name(f"{path.name}.torn-{start}-{digest.hexdigest()[:16]}")
    atomic_write_chunks(sidecar, _ranged(fd, start, stop, path))
    return sidecar.name


def _ranged(fd: int, start: int, stop: int, path: Path) -> Iterator[bytes]:
    while start < stop:
        chunk = _pread(fd, min(_CHUNK, stop - start), start, path)
        if not chunk:
            return
        start += len(chunk)
        yield chunk


def repair_tail(path: Path, fd: int, device_id: str, *, existed: bool) -> tuple[Tail, str | None]:
    """Find the valid end; save and cut off whatever follows it (the saved file's name)."""
    if not existed:
        fsync_directory(path.parent)
    size = os.fstat(fd).st_size
    tail = _valid_tail(fd, size, path)
    if tail.last is None and size and not _looks_like_log(fd, path):
        raise EvidenceError(f"{path} is not an audit log (no valid line, no genesis start)")
    _check_device(fd, path, device_id)
    saved = None
    if tail.end < size:
        saved = _save_sidecar(path, fd, tail.end, size)
        try:
            os.ftruncate(fd, tail.end)
        except OSError as exc:
            raise storage_error("truncating audit log", path, exc) from exc
        fsync_fd(fd, path)
    return tail, saved


def unrecorded_sidecars(path: Path) -> list[tuple[int, Path]]:
    """Saved tails of this log that no ``audit_recovered`` record names, by offset."""
    prefix = path.name
    try:
        names = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(prefix))
    except OSError as exc:
        raise storage_error("listing", path.parent, exc) from exc
    pending = []
    for name in names:
        match = _SIDECAR.fullmatch(name[len(prefix) :])
        if match and not _is_recorded(path, int(match["offset"]), name):
            pending.append((int(match["offset"]), path.with_name(name)))
    return sorted(pending)


def _is_recorded(path: Path, offset: int, name: str) -> bool:
    """Whether a record at or after ``offset`` names the saved tail ``name``.

    Normally it is the first or second line there; the scan goes on to the end only for a tail
    whose record was written late, after an interrupted recovery.
    """
    try:
        with path.open("rb") as file:
            file.seek(offset)
            while raw := file.readline(MAX_LINE_BYTES + 1):
                with contextlib.suppress(LineError):
                    record = parse_line(raw, offset)
                    if record.kind == "audit_recovered" and record.fields.get("saved_as") == name:
                        return True
                offset += len(raw)
    except OSError as exc:
        raise storage_error("reading audit log", path, exc) from exc
    return False


def file_digest(path: Path) -> tuple[int, str]:
    """Size and hex SHA-256 of a file, read in bounded chunks."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc
    return size, digest.hexdigest()
