"""The segment record file: a header, then length-prefixed records with a CRC each.

A segment is written append-only by ``RecordWriter``. After a crash (SIGKILL, power loss) the file
is a valid prefix followed by a torn or damaged tail; ``scan`` finds the prefix and ``recover``
cuts the tail off, keeping the cut bytes in a ``.torn-<offset>`` file next to the segment, so a
recovered segment's SHA-256 covers exactly its complete records and no byte is ever destroyed.
``SegmentReader`` iterates records with bounded memory, strictly (verify, receiver) or tolerantly.
The byte layout is documented in docs/storage.md; the codec and reader live in
``device.recordformat`` and are re-exported here, so users import from this module only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from device.blocksink import CRC_BYTES, BlockSink
from device.durable import atomic_write_chunks, fsync_directory, fsync_fd, storage_error
from device.errors import EvidenceError, StorageError
from device.recordformat import (
    MediaInfo,
    PtsRange,
    Record,
    RecordInfo,
    RecordType,
    SegmentHeader,
    SegmentReader,
    StopReason,
    encode_record_head,
    json_document,
    media_record_head,
)

_READ_CHUNK: Final = 1024 * 1024
_CRC_BYTES: Final = CRC_BYTES


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a closed or recovered segment file is: enough to build its manifest.

    ``status`` is ``complete`` for ``RecordWriter.close`` and ``recovered`` for ``recover``.
    ``first_pts_us`` / ``last_pts_us`` are the smallest and largest media ``pts_us``, ``end_us``
    the largest ``pts_us + duration_us`` (None without media records). For a recovered segment,
    ``stop`` says what ended the valid prefix, ``dropped_bytes`` how much was cut off and
    ``torn_path`` where those bytes were kept.
    """

    path: Path
    header: SegmentHeader
    status: Literal["complete", "recovered"]
    size: int
    sha256: str
    records: int
    first_pts_us: int | None
    last_pts_us: int | None
    end_us: int | None
    stop: StopReason = StopReason.CLEAN
    dropped_bytes: int = 0
    torn_path: Path | None = None


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Every complete, valid record of a possibly torn segment file, and what ended the scan.

    ``header`` is None only when the file is shorter than its header (a crash while creating it).
    ``valid_size`` is the byte length of the valid prefix; ``sha256`` is the hash of that prefix.
    ``detail`` explains ``stop`` naming the file, record index and byte offset. The pts fields
    are as in ``SegmentSummary``.
    """

    path: Path
    header: SegmentHeader | None
    records: tuple[RecordInfo, ...]
    valid_size: int
    file_size: int
    sha256: str
    stop: StopReason
    detail: str
    first_pts_us: int | None
    last_pts_us: int | None
    end_us: int | None

    @property
    def dropped_bytes(self) -> int:
        """Bytes after the valid prefix: what ``recover`` cuts off."""
        return self.file_size - self.valid_size


class RecordWriter:
    """Appends records to a new segment file; the caller decides when to fsync.

    The constructor creates ``path`` exclusively (``O_EXCL``: a segment is never overwritten),
    writes the header and (unless ``sync`` is false) makes file and directory entry durable.
    Appends go through a buffer; ``flush(sync=True)`` writes it out and fsyncs, so every record
    appended before it survives a power loss. A running SHA-256 of everything written lets
    ``close`` answer without rereading. With ``offload`` (the default) full blocks are hashed and
    written on the shared I/O thread (``device.blocksink``). After an ``OSError`` the writer
    refuses further use: run ``recover`` on the file.
    """

    def __init__(
        self,
        path: Path,
        header: SegmentHeader,
        *,
        buffer_size: int = 4 * 1024 * 1024,
        sync: bool = True,
        offload: bool = True,
    ) -> None:
        self._path = path
        self._header = header
        self._pts = PtsRange()
        self._size = 0
        self._records = 0
        self._synced_records = 0
        self._synced_size = 0
        self._failed = False
        self._summary: SegmentSummary | None = None
        self._file = BlockSink(
            _create_exclusive(path), path, block_size=buffer_size, offload=offload
        )
        try:
            self._write(header.encode())
            self.flush(sync=sync)
            if sync:
                fsync_directory(path.parent)
        except BaseException:
            self._file.close(flush=False)
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    @property
    def path(self) -> Path:
        """The segment file."""
        return self._path

    @property
    def records(self) -> int:
        """Records appended so far (buffered or not)."""
        return self._records

    @property
    def size(self) -> int:
        """Bytes appended so far, header included."""
        return self._size

    @property
    def synced_records(self) -> int:
        """Records known to be on stable storage (as of the last ``flush(sync=True)``)."""
        return self._synced_records

    @property
    def synced_size(self) -> int:
        """Bytes known to be on stable storage."""
        return self._synced_size

    def append_media(
        self,
        stream: int,
        packet_index: int,
        pts_us: int,
        duration_us: int,
        *,
        keyframe: bool,
        data: bytes | bytearray | memoryview,
    ) -> None:
        """Append one encoded media packet. Values out of their field's range raise ValueError."""
        if self._failed or self._file.closed:
            self._check_usable()
        head = media_record_head(
            stream, packet_index, pts_us, duration_us, keyframe=keyframe, data_len=len(data)
        )
        try:
            self._file.add_checked(head, data)
        except StorageError:
            self._failed = True
            raise
        self._size += len(head) + len(data) + _CRC_BYTES
        self._records += 1
        self._pts.add(pts_us, duration_us)

    def append_marker(self, document: bytes) -> None:
        """Append a MARKER record: one JSON object (bookmark, trigger, ...), as UTF-8 bytes."""
        self._append(RecordType.MARKER, b"", json_document(document))

    def append_metadata(self, document: bytes) -> None:
        """Append a METADATA record: one JSON object describing the recording, as UTF-8 bytes."""
        self._append(RecordType.METADATA, b"", json_document(document))

    def flush(self, *, sync: bool) -> None:
        """Hand buffered records to the OS; with ``sync`` also fsync them to stable storage."""
        self._check_usable()
        try:
            if sync:
                self._file.fsync()
            else:
                self._file.flush()
        except StorageError:
            self._failed = True
            raise
        if sync:
            self._synced_records = self._records
            self._synced_size = self._size

    def mark_synced(self) -> None:
        """Record that a device would have synced here, without forcing it to the host's disk.

        Virtual-time runs model durability this way: a simulated power loss keeps what was
        written up to the last mark (see ``EvidenceStore``).
        """
        self._synced_records = self._records
        self._synced_size = self._size

    def close(self, *, sync: bool = True) -> SegmentSummary:
        """Flush, fsync file and directory (unless ``sync`` is false), close; return the summary.

        A second call returns the same summary. ``sync=False`` is for virtual-time runs that
        model durability rather than force it to the host's disk.
        """
        if self._summary is not None:
            return self._summary
        try:
            self.flush(sync=sync)
            digest = self._file.hexdigest()
        finally:
            self._file.close(flush=not self._failed)
        if sync:
            fsync_directory(self._path.parent)
        self._summary = SegmentSummary(
            path=self._path,
            header=self._header,
            status="complete",
            size=self._size,
            sha256=digest,
            records=self._records,
            first_pts_us=self._pts.first_us,
            last_pts_us=self._pts.last_us,
            end_us=self._pts.end_us,
        )
        return self._summary

    def abandon(self, *, keep_buffered: bool = True) -> None:
        """Close without fsync after a failure; buffered records are written if the OS allows.

        ``keep_buffered=False`` models a power loss: records still in memory are dropped, blocks
        already handed to the OS stay. The file is left for ``recover``, which keeps every
        complete record that reached it.
        """
        if not self._file.closed:
            try:
                self._file.close(flush=keep_buffered)
            except StorageError:
                # The file is already suspect; recover() will find out how much reached it.
                self._failed = True

    def _append(self, rtype: RecordType, meta: bytes, data: bytes | bytearray | memoryview) -> None:
        self._check_usable()
        head = encode_record_head(rtype, meta, len(data))
        try:
            self._file.add_checked(head, data)
        except StorageError:
            self._failed = True
            raise
        self._size += len(head) + len(data) + _CRC_BYTES
        self._records += 1

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._file.add(data)
        except StorageError:
            self._failed = True
            raise
        self._size += len(data)

    def _check_usable(self) -> None:
        if self._failed:
            raise StorageError(
                f"segment {self._path} had a write failure; stop writing it and run recover() on it"
            )
        if self._file.closed:
            raise ValueError(f"segment {self._path} is closed")


def _create_exclusive(path: Path) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError as exc:
        raise StorageError(
            f"segment {path} already exists; a segment is never overwritten: pick a new index "
            "or recover() the existing file"
        ) from exc
    except OSError as exc:
        raise storage_error("creating segment", path, exc) from exc
    return fd


def scan(path: Path) -> ScanResult:
    """Read a possibly torn segment with bounded memory; return its valid prefix and records.

    Raises ``EvidenceError`` only when the file is not a segment at all (wrong magic, unsupported
    version, damaged header); damage after the header ends the scan and is described in the result.
    """
    infos: list[RecordInfo] = []
    pts = PtsRange()
    with SegmentReader(path, strict=False, with_payload=False) as reader:
        for record in reader:
            infos.append(record.info)
            if record.info.media is not None:
                pts.add(record.info.media.pts_us, record.info.media.duration_us)
        return ScanResult(
            path=path,
            header=reader.header,
            records=tuple(infos),
            valid_size=reader.valid_size,
            file_size=reader.file_size,
            sha256=reader.sha256,
            stop=reader.stop,
            detail=reader.detail,
            first_pts_us=pts.first_us,
            last_pts_us=pts.last_us,
            end_us=pts.end_us,
        )


def recover(path: Path) -> SegmentSummary:
    """Make a segment left open by a crash into a closed one holding its complete records.

    The bytes after the valid prefix are first saved (fsynced) to ``<name>.torn-<offset>`` next to
    the segment, then the segment is truncated to the prefix and fsynced, so its SHA-256 equals the
    summary's. Running it again is harmless. ``EvidenceError`` if the file is not a segment or its
    header is incomplete (the crash came before any record could be written: no evidence in it).
    """
    result = scan(path)
    if result.header is None:
        raise EvidenceError(f"segment {path}: {result.detail}; there is nothing to recover")
    torn_path: Path | None = None
    if result.dropped_bytes:
        torn_path = path.with_name(f"{path.name}.torn-{result.valid_size}")
        atomic_write_chunks(torn_path, _read_range(path, result.valid_size, result.file_size))
    _truncate_durably(path, result.valid_size)
    return SegmentSummary(
        path=path,
        header=result.header,
        status="recovered",
        size=result.valid_size,
        sha256=result.sha256,
        records=len(result.records),
        first_pts_us=result.first_pts_us,
        last_pts_us=result.last_pts_us,
        end_us=result.end_us,
        stop=result.stop,
        dropped_bytes=result.dropped_bytes,
        torn_path=torn_path,
    )


def _read_range(path: Path, start: int, stop: int) -> Iterator[bytes]:
    """``[start, stop)`` of a file in bounded chunks: the torn tail may be large."""
    try:
        with path.open("rb") as file:
            file.seek(start)
            while start < stop:
                chunk = file.read(min(_READ_CHUNK, stop - start))
                if not chunk:
                    return
                start += len(chunk)
                yield chunk
    except OSError as exc:
        raise storage_error("reading segment", path, exc) from exc


def _truncate_durably(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise storage_error("opening segment", path, exc) from exc
    try:
        os.ftruncate(fd, size)
        # Even with nothing cut, fsync: after a SIGKILL the records may still be only in the page
        # cache, and a manifest is about to be signed over them.
        fsync_fd(fd, path)
    except OSError as exc:
        raise storage_error("truncating segment", path, exc) from exc
    finally:
        os.close(fd)
    fsync_directory(path.parent)


__all__ = [
    "MediaInfo",
    "Record",
    "RecordInfo",
    "RecordType",
    "RecordWriter",
    "ScanResult",
    "SegmentHeader",
    "SegmentReader",
    "SegmentSummary",
    "StopReason",
    "recover",
    "scan",
]
