"""``EventJournal``: the on-disk journal of outgoing MQTT messages (pure file I/O, no asyncio).

Every outgoing event goes through it, online or not: ``append`` it, publish it, then
``mark_published``. After a crash or a long time offline, ``pending()`` gives back, in order,
everything not yet marked.

Files (``path`` and ``path + ".mark"``):

* the journal: an 8-byte magic, then records ``length u32 | crc32 u32 | body``, where the body is
  ``seq u64 | topic length u16 | topic (UTF-8) | payload``; big-endian; the CRC covers the body.
  Appends only ever go at the end.
* the watermark: ``seq u64 | crc32 u32``, replaced atomically (write, fsync, rename, fsync the
  directory). Every record with ``seq <= watermark`` has been published.

Guarantees. A record appended with ``sync=True`` (or followed by ``flush()``) survives a crash.
A crash may tear the tail of the file: on open, the first record that is short, fails its CRC or
breaks the sequence ends the journal, and the file is truncated there (the torn record had not been
synced, so nothing acknowledged is lost). The watermark is saved every ``checkpoint_every`` marks,
not per message, so a crash can replay up to that many published messages: events carry IDs and
receivers drop duplicates. Messages may be marked out of order (QoS 1 acks do not keep order); the
watermark only moves over a contiguous published prefix. When everything is published and the
file has grown past ``compact_min_bytes``, the watermark is saved and the file truncated.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from device.errors import StorageError

log = logging.getLogger(__name__)

MAGIC = b"BWCJRN1\n"
_RECORD = struct.Struct(">II")  # body length, crc32(body)
_BODY = struct.Struct(">QH")  # seq, topic length
_MARK = struct.Struct(">QI")  # watermark seq, crc32 of the seq
MAX_BODY = 64 << 20
"""Largest record body accepted on read; a longer length field means a torn or corrupt tail."""


class JournalError(StorageError):
    """The journal file could not be read or written, or is not a journal."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journalled message: its sequence number (from 1, never reused), topic and payload."""

    seq: int
    topic: str
    payload: bytes


def encode_record(entry: JournalEntry) -> bytes:
    """The on-disk bytes of one record."""
    topic = entry.topic.encode("utf-8")
    if len(topic) > 0xFFFF:
        raise ValueError(f"topic too long for the journal: {len(topic)} bytes")
    body = _BODY.pack(entry.seq, len(topic)) + topic + entry.payload
    if len(body) > MAX_BODY:
        raise ValueError(f"journal record too large: {len(body)} bytes (max {MAX_BODY})")
    return _RECORD.pack(len(body), zlib.crc32(body)) + body


def decode_records(data: bytes, start: int = len(MAGIC)) -> tuple[list[JournalEntry], int]:
    """Decode records from ``start``; return them and the offset where the valid ones end."""
    entries: list[JournalEntry] = []
    pos, last_seq = start, 0
    while pos + _RECORD.size <= len(data):
        length, crc = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length
        if length < _BODY.size or length > MAX_BODY or end > len(data):
            break
        body = data[pos + _RECORD.size : end]
        if zlib.crc32(body) != crc:
            break
        seq, topic_len = _BODY.unpack_from(body)
        if seq <= last_seq or _BODY.size + topic_len > length:
            break
        try:
            topic = body[_BODY.size : _BODY.size + topic_len].decode("utf-8")
        except UnicodeDecodeError:
            break
        entries.append(JournalEntry(seq, topic, body[_BODY.size + topic_len :]))
        pos, last_seq = end, seq
    return entries, pos


class EventJournal:
    """Append-only journal of outgoing messages with a published watermark; see module docs.

    ``durable=False`` skips every fsync (simulations); crash guarantees then depend on the OS.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        checkpoint_every: int = 32,
        compact_min_bytes: int = 1 << 20,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.path = Path(path)
        self.mark_path = self.path.with_name(self.path.name + ".mark")
        self.durable = durable
        self.checkpoint_every = checkpoint_every
        self.compact_min_bytes = compact_min_bytes
        self.dropped_tail_bytes = 0
        """Bytes of torn tail cut off when the journal was opened."""
        self._entries: dict[int, JournalEntry] = {}
        self._marks_since_checkpoint = 0
        self._size = 0
        self._synced = 0
        self._last_seq = 0
        self._saved_watermark = 0
        try:
            self._saved_watermark = self._read_watermark()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    # -- public API ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever appended (0 for a new journal)."""
        return self._last_seq

    @property
    def watermark(self) -> int:
        """Every message with ``seq <= watermark`` is published (in memory; maybe not saved yet)."""
        return next(iter(self._entries)) - 1 if self._entries else self._last_seq

    @property
    def size_bytes(self) -> int:
        """Current size of the journal file."""
        return self._size

    @property
    def synced_bytes(self) -> int:
        """How much of the journal file is known to be on disk (fsync'd)."""
        return self._synced

    def append(self, topic: str, payload: bytes, *, sync: bool = True) -> int:
        """Journal one message and return its sequence number.

        ``sync=True`` fsyncs before returning; with ``sync=False`` call ``flush()`` after a batch.
        """
        entry = JournalEntry(self._last_seq + 1, topic, bytes(payload))
        self._write(encode_record(entry))
        self._last_seq = entry.seq
        self._entries[entry.seq] = entry
        if sync:
            self.flush()
        return entry.seq

    def flush(self) -> None:
        """Make every appended record durable (one fsync for a batch of ``sync=False`` appends)."""
        if self._synced != self._size:
            self._fsync(self._fd)
            self._synced = self._size

    def pending(self) -> list[JournalEntry]:
        """Messages not yet marked published, in append order."""
        return list(self._entries.values())

    def mark_published(self, seq: int) -> None:
        """Record that message ``seq`` was published (idempotent; any order)."""
        if not 1 <= seq <= self._last_seq:
            raise ValueError(f"no journalled message {seq} (last is {self._last_seq})")
        if self._entries.pop(seq, None) is None:
            return
        self._marks_since_checkpoint += 1
        if self._marks_since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        if not self._entries and self._size >= max(self.compact_min_bytes, len(MAGIC) + 1):
            self.compact()

    def checkpoint(self) -> None:
        """Save the watermark now (atomically)."""
        self._marks_since_checkpoint = 0
        watermark = self.watermark
        if watermark == self._saved_watermark:
            return
        data = struct.pack(">Q", watermark)
        tmp = self.mark_path.with_name(self.mark_path.name + ".tmp")
        try:
            with tmp.open("wb") as out:
                out.write(data + struct.pack(">I", zlib.crc32(data)))
                out.flush()
                self._fsync(out.fileno())
            tmp.replace(self.mark_path)
            self._fsync_dir()
        except OSError as exc:
            raise JournalError(f"cannot save journal watermark {self.mark_path}: {exc}") from exc
        self._saved_watermark = watermark

    def compact(self) -> None:
        """Drop published records from the file (rewrites it unless everything is published)."""
        self.flush()
        self.checkpoint()
        keep = b"".join(encode_record(e) for e in self._entries.values())
        try:
            if not keep:
                os.ftruncate(self._fd, len(MAGIC))
                self._fsync(self._fd)
            else:
                self._rewrite(MAGIC + keep)
        except OSError as exc:
            raise JournalError(f"cannot compact journal {self.path}: {exc}") from exc
        self._size = self._synced = len(MAGIC) + len(keep)

    def close(self, *, checkpoint: bool = True) -> None:
        """Flush, save the watermark and close; ``checkpoint=False`` simulates a crash."""
        if self._fd < 0:
            return
        try:
            if checkpoint:
                self.flush()
                self.checkpoint()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _recover(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        self._size = self._synced = len(data)
        if len(data) < len(MAGIC):
            if data != MAGIC[: len(data)]:
                raise JournalError(f"{self.path} is not an event journal (bad magic)")
            self._truncate(0)
            self._write(MAGIC)
            self.flush()
            data = MAGIC
        elif not data.startswith(MAGIC):
            raise JournalError(f"{self.path} is not an event journal (bad magic)")
        entries, end = decode_records(data)
        if end < len(data):
            self.dropped_tail_bytes = len(data) - end
            log.warning("journal %s: dropped a torn tail of %d bytes", self.path, len(data) - end)
            self._truncate(end)
        self._size = self._synced = end
        last = entries[-1].seq if entries else 0
        self._last_seq = max(last, self._saved_watermark)
        self._entries = {e.seq: e for e in entries if e.seq > self._saved_watermark}

    def _read_watermark(self) -> int:
        try:
            raw = self.mark_path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(raw) != _MARK.size:
            raise JournalError(f"journal watermark {self.mark_path} has the wrong size")
        seq, crc = _MARK.unpack(raw)
        if zlib.crc32(raw[:8]) != crc:
            raise JournalError(f"journal watermark {self.mark_path} fails its CRC")
        return int(seq)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Cut a partial record off, or the next append would sit behind garbage.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.exception("journal %s: cannot cut a partial append", self.path)
            raise JournalError(f"cannot append to journal {self.path}: {exc}") from exc
        self._size += len(data)

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            self._fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot truncate journal {self.path}: {exc}") from exc
        self._size = self._synced = size

    def _rewrite(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            self._fsync(out.fileno())
        tmp.replace(self.path)
        self._fsync_dir()
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)

    def _fsync(self, fd: int) -> None:
        if self.durable:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise JournalError(f"fsync failed on {self.path}: {exc}") from exc

    def _fsync_dir(self) -> None:
        if self.durable:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
