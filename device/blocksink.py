"""Writes a file in large blocks and hashes it, off the caller's thread when asked.

Segment writing is the camera's hot path: small records must not each pay for a system call and a
hash update. The writer gathers records into blocks of about a megabyte; each full block is hashed
and written by one shared I/O thread (``hashlib`` and ``os.write`` release the GIL), so building
records on one core overlaps with hashing and writing on the other. Blocks of one file are written
in order (the thread is single), at most ``max_pending`` wait at a time, and a failure surfaces as
``StorageError`` at the next call.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from device.durable import fsync_fd, storage_error
from device.errors import StorageError

CRC_BYTES = 4
_CRC = struct.Struct(">I")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _io_thread() -> ThreadPoolExecutor:
    global _executor  # noqa: PLW0603 - one I/O thread per process, made on first use
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bwc-segment-io")
        return _executor


class BlockSink:
    """Append-only writer of one file descriptor with a running SHA-256 of what it wrote."""

    def __init__(
        self, fd: int, path: Path, *, block_size: int, offload: bool, max_pending: int = 8
    ) -> None:
        self._fd = fd
        self._path = path
        self._block_size = block_size
        self._offload = offload
        self._max_pending = max_pending
        self._hash = hashlib.sha256()
        # Parts are joined once per block: appending to one growing bytearray instead would copy
        # every byte several times over as it is reallocated.
        self._parts: list[bytes | tuple[bytes, bytes]] = []
        self._pending = 0
        self._futures: deque[Future[None]] = deque()
        self.closed = False

    def add(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; a full block is handed on to be hashed and written."""
        self._parts.append(data if isinstance(data, bytes) else bytes(data))
        self._pending += len(data)
        if self._pending >= self._block_size:
            self._submit()

    def add_checked(self, head: bytes, data: bytes | bytearray | memoryview) -> None:
        """Queue ``head``, ``data`` and then the big-endian CRC-32 (zlib) of both.

        The CRC is computed with the block, on the I/O thread when offloading: it is the largest
        per-byte cost after SHA-256, and zlib releases the GIL for it.
        """
        self._parts.append((head, data if isinstance(data, bytes) else bytes(data)))
        self._pending += len(head) + len(data) + CRC_BYTES
        if self._pending >= self._block_size:
            self._submit()

    def flush(self) -> None:
        """Hand on what is queued and wait until everything has reached the OS."""
        if self._pending:
            self._submit()
        while self._futures:
            self._result(self._futures.popleft())

    def fsync(self) -> None:
        """Flush, then force what was written to stable storage."""
        self.flush()
        fsync_fd(self._fd, self._path)

    def hexdigest(self) -> str:
        """SHA-256 of everything added; flushes first."""
        self.flush()
        return self._hash.hexdigest()

    def close(self, *, flush: bool = True) -> None:
        """Close the descriptor, after flushing unless ``flush`` is false (after a failure)."""
        if self.closed:
            return
        try:
            if flush:
                self.flush()
            else:
                self._abandon_pending()
        finally:
            self.closed = True
            os.close(self._fd)

    def _submit(self) -> None:
        block = _assemble(self._parts)
        self._parts = []
        self._pending = 0
        if self._offload:
            # Hash and write go to the I/O thread, a few GIL hand-overs per block. Work that
            # takes and drops the GIL per record there would make both threads wait on each other.
            while len(self._futures) >= self._max_pending:
                self._result(self._futures.popleft())
            self._futures.append(_io_thread().submit(self._write_block, block))
        else:
            self._write_block(block)

    def _write_block(self, block: bytes) -> None:
        self._hash.update(block)
        view = memoryview(block)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                raise storage_error("writing segment", self._path, exc) from exc
            view = view[written:]

    def _result(self, future: Future[None]) -> None:
        try:
            future.result()
        except StorageError:
            self._abandon_pending()
            raise

    def _abandon_pending(self) -> None:
        # After a failure, let what is already queued land (the OS may still take it) but add
        # nothing more: recovery keeps every complete record that reached the file.
        while self._futures:
            self._futures.popleft().exception()  # waits; a failure is already being reported
        self._parts = []
        self._pending = 0


def _assemble(parts: list[bytes | tuple[bytes, bytes]]) -> bytes:
    pieces: list[bytes] = []
    for part in parts:
        if isinstance(part, bytes):
            pieces.append(part)
        else:
            head, data = part
            pieces += (head, data, _CRC.pack(zlib.crc32(data, zlib.crc32(head))))
    return b"".join(pieces)
