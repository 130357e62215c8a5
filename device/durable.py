"""Durability helpers: fsync a file and its directory, write a file atomically.

On POSIX a write is durable only once the file is fsynced, and a new, renamed or truncated name is
durable only once its *directory* is fsynced as well; forgetting the directory is the classic way a
"saved" file vanishes after a power loss. Every helper here translates ``OSError`` into
``StorageError`` naming the path and what to do, so callers in the evidence store handle one error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from device.errors import StorageError

TEMP_SUFFIX: Final = ".tmp"
"""Suffix of the temporary files ``atomic_write_*`` create; a crash may leave one behind."""

_ADVICE: Final = "check that the storage is mounted, writable and not full"


def storage_error(what: str, path: Path | str, exc: OSError) -> StorageError:
    """A ``StorageError`` for a failed OS call: names the operation, the path and the remedy."""
    reason = exc.strerror or exc.__class__.__name__
    return StorageError(f"{what} {os.fspath(path)!r} failed: {reason}; {_ADVICE}")


def fsync_fd(fd: int, path: Path | str) -> None:
    """Flush a file's data and size to the device; ``path`` is only for the error message."""
    try:
        # fdatasync also writes the size when it changed, which is all an appended file needs.
        os.fdatasync(fd)
    except OSError as exc:
        raise storage_error("fsync of", path, exc) from exc


def fsync_directory(path: Path | str) -> None:
    """Make the directory's entries (created, renamed, removed names) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise storage_error("opening directory", path, exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise storage_error("fsync of directory", path, exc) from exc
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True, sync: bool = True
) -> None:
    """Write ``data`` to ``path`` so that after a crash the file is either old or new, never torn.

    See ``atomic_write_chunks``.
    """
    atomic_write_chunks(path, (data,), mode=mode, overwrite=overwrite, sync=sync)


def atomic_write_chunks(
    path: Path,
    chunks: Iterable[bytes],
    *,
    mode: int = 0o644,
    overwrite: bool = True,
    sync: bool = True,
) -> None:
    """Write the concatenated ``chunks`` to ``path`` atomically and durably.

    A temporary file in the same directory is created with ``mode`` (never wider, whatever the
    umask), written, fsynced, then moved into place and the directory fsynced. With
    ``overwrite=False`` the move is a hard link, which fails if ``path`` exists, so an existing
    file is never replaced (``StorageError``). Chunks are written as they come: a large payload
    need not be held in memory. ``sync=False`` skips both fsyncs (virtual-time runs, where
    forcing the host's disk would measure the host): the write order and the rename stay.
    """
    temp = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    _write_temp(temp, chunks, mode, sync=sync)
    try:
        if overwrite:
            temp.replace(path)
        else:
            path.hardlink_to(temp)
            temp.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise storage_error("moving into place", path, exc) from exc
    if sync:
        fsync_directory(path.parent)


def _write_temp(temp: Path, chunks: Iterable[bytes], mode: int, *, sync: bool) -> None:
    with contextlib.suppress(FileNotFoundError):
        # A temp file left by an earlier crash holds nothing anyone has been promised.
        temp.unlink()
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise storage_error("creating", temp, exc) from exc
    try:
        try:
            # The umask only narrows the mode; set it so 0600 stays 0600 and 0644 is 0644.
            os.fchmod(fd, mode)
        except OSError as exc:
            raise storage_error("setting the mode of", temp, exc) from exc
        for chunk in chunks:
            write_all(fd, chunk, temp)
        if sync:
            fsync_fd(fd, temp)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    os.close(fd)


def write_all(fd: int, data: bytes, path: Path) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less), or ``StorageError``."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            raise storage_error("writing", path, exc) from exc
        view = view[written:]
