"""Byte layout of segment record files, and the reader that validates it.

All integers are big-endian. A file is a header, then records::

    header  = magic "BWCSEG\\x00\\x01" | version u16 | device_len u16 | device UTF-8
              | recording_len u16 | recording UTF-8 | segment_index u32 | header_crc u32
    record  = length u32 | type u8 | body[length] | crc u32

``length`` counts only ``body``; ``header_crc`` is CRC-32 (``zlib.crc32``) of every header byte
before it, a record's ``crc`` of every record byte before it (length, type and body), so a damaged
length field is caught too. A MEDIA body starts with a 22-byte packet header (stream u8,
packet_index u64, pts_us i64, duration_us u32, flags u8 with bit 0 = keyframe, other bits 0), then
the packet bytes. MARKER and METADATA bodies are one UTF-8 JSON object. docs/storage.md
has the full description.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Self

import msgspec

from device.durable import storage_error
from device.errors import EvidenceError
from protocol.ids import is_safe_id

MAGIC: Final = b"BWCSEG\x00\x01"
FORMAT_VERSION: Final = 1
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
"""Largest record body; a longer length field is damage, so a reader never allocates more."""
RECORD_OVERHEAD: Final = 9
"""Bytes a record adds around its body: length u32, type u8, crc u32."""
MEDIA_META_SIZE: Final = 22
"""Bytes of a MEDIA body before the packet bytes."""
MAX_ID_BYTES: Final = 64

_HEAD: Final = struct.Struct(">IB")
_MEDIA: Final = struct.Struct(">BQqIB")
_MEDIA_HEAD: Final = struct.Struct(">IBBQqIB")  # _HEAD then _MEDIA, packed in one go
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_KEYFRAME: Final = 0x01
_READ_BUFFER: Final = 1024 * 1024


class RecordType(IntEnum):
    """The ``type`` byte of a record."""

    MEDIA = 1
    MARKER = 2
    METADATA = 3


class StopReason(StrEnum):
    """What ended the valid prefix of a segment file."""

    CLEAN = "clean"  # the file ends exactly after a complete record
    TORN_HEADER = "torn_header"  # the file ends inside the header
    TORN_RECORD = "torn_record"  # the file ends inside a record
    BAD_CRC = "bad_crc"  # a complete record's CRC does not match
    BAD_LENGTH = "bad_length"  # a length field above MAX_BODY_BYTES
    BAD_RECORD = "bad_record"  # CRC matches but the content is invalid (unknown type, ...)


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """Identity of a segment, written at the start of its file."""

    device: str
    recording: str
    index: int

    def __post_init__(self) -> None:
        for what, value in (("device", self.device), ("recording", self.recording)):
            if not is_safe_id(value):
                raise ValueError(f"segment header {what} {value!r} is not a valid ID")
        if not 0 <= self.index <= 0xFFFFFFFF:
            raise ValueError(f"segment index {self.index} is outside 0..2**32-1")

    def encode(self) -> bytes:
        """The header's exact bytes, CRC included."""
        device, recording = self.device.encode(), self.recording.encode()
        body = b"".join(
            (
                MAGIC,
                _U16.pack(FORMAT_VERSION),
                _U16.pack(len(device)),
                device,
                _U16.pack(len(recording)),
                recording,
                _U32.pack(self.index),
            )
        )
        return body + _U32.pack(zlib.crc32(body))


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """The packet header of a MEDIA record."""

    stream: int
    packet_index: int
    pts_us: int
    duration_us: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """Where a valid record is and what it is; ``size`` is its bytes on disk, overhead included."""

    index: int
    offset: int
    size: int
    type: RecordType
    media: MediaInfo | None


@dataclass(frozen=True, slots=True)
class Record:
    """A valid record: ``payload`` is the packet bytes (MEDIA) or the JSON document."""

    info: RecordInfo
    payload: bytes


class PtsRange:
    """Smallest and largest media pts, and the largest pts + duration, seen so far."""

    __slots__ = ("end_us", "first_us", "last_us")

    def __init__(self) -> None:
        self.first_us: int | None = None
        self.last_us: int | None = None
        self.end_us: int | None = None

    def add(self, pts_us: int, duration_us: int) -> None:
        """Include one packet (called per packet written: comparisons, not min/max calls)."""
        last = self.last_us
        if last is None or self.first_us is None or self.end_us is None:
            self.first_us, self.last_us, self.end_us = pts_us, pts_us, pts_us + duration_us
            return
        if pts_us > last:
            self.last_us = pts_us
        elif pts_us < self.first_us:
            self.first_us = pts_us
        end = pts_us + duration_us
        if end > self.end_us:  # noqa: PLR1730 - per packet: a comparison beats a max() call
            self.end_us = end


def media_meta(
    stream: int, packet_index: int, pts_us: int, duration_us: int, *, keyframe: bool
) -> bytes:
    """The 22-byte MEDIA packet header; ValueError if a value does not fit its field."""
    try:
        return _MEDIA.pack(stream, packet_index, pts_us, duration_us, _KEYFRAME if keyframe else 0)
    except struct.error as exc:
        raise ValueError(
            f"media packet field out of range (stream u8, packet_index u64, pts_us i64, "
            f"duration_us u32): {stream}, {packet_index}, {pts_us}, {duration_us}"
        ) from exc


def media_record_head(
    stream: int, packet_index: int, pts_us: int, duration_us: int, *, keyframe: bool, data_len: int
) -> bytes:
    """Length, type and MEDIA header of a packet record in one pack (the writer's hot path).

    Same bytes as ``encode_record_head(MEDIA, media_meta(...), data_len)``; ValueError if a value
    does not fit its field.
    """
    length = MEDIA_META_SIZE + data_len
    if length > MAX_BODY_BYTES:
        raise ValueError(f"record body of {length} bytes exceeds {MAX_BODY_BYTES}")
    try:
        return _MEDIA_HEAD.pack(
            length,
            RecordType.MEDIA,
            stream,
            packet_index,
            pts_us,
            duration_us,
            _KEYFRAME if keyframe else 0,
        )
    except struct.error:
        media_meta(stream, packet_index, pts_us, duration_us, keyframe=keyframe)  # names it
        raise


def json_document(document: bytes) -> bytes:
    """Check that ``document`` is one UTF-8 JSON object (what MARKER and METADATA hold)."""
    try:
        value = msgspec.json.decode(document)
    except msgspec.DecodeError as exc:
        raise ValueError(f"record document is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("record document must be a JSON object")  # noqa: TRY004 - a value fault
    return document


def encode_record_head(rtype: RecordType, meta: bytes, data_len: int) -> bytes:
    """Length, type and the start of the body (``meta``) of a record whose rest is ``data_len``."""
    length = len(meta) + data_len
    if length > MAX_BODY_BYTES:
        raise ValueError(f"record body of {length} bytes exceeds {MAX_BODY_BYTES}")
    return _HEAD.pack(length, rtype) + meta


class SegmentReader:
    """Iterates the complete, valid records of a segment file, reading with bounded memory.

    ``strict=True`` (verify, receiver) raises ``EvidenceError`` at the first fault, naming the file,
    record index, byte offset and problem. ``strict=False`` (crash recovery) ends the iteration
    there instead; ``stop`` and ``detail`` then say why. ``sha256`` and ``valid_size`` cover the
    header and the records returned so far. A bad magic, version or header CRC always raises.
    """

    def __init__(self, path: Path, *, strict: bool = True, with_payload: bool = True) -> None:
        self._path = path
        self._strict = strict
        self._with_payload = with_payload
        self._hash = hashlib.sha256()
        self._valid_size = 0
        self._count = 0
        self._stop: StopReason | None = None
        self._detail = ""
        try:
            self._file: BinaryIO = path.open("rb", buffering=_READ_BUFFER)
            self._file_size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise storage_error("reading segment", path, exc) from exc
        try:
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    @property
    def file_size(self) -> int:
        """Size of the file when it was opened."""
        return self._file_size

    @property
    def valid_size(self) -> int:
        """Bytes of the header and records validated so far."""
        return self._valid_size

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the bytes validated so far."""
        return self._hash.hexdigest()

    @property
    def stop(self) -> StopReason:
        """What ended the iteration; only known once it has ended."""
        if self._stop is None:
            raise ValueError("the reader has not reached the end of its valid records yet")
        return self._stop

    @property
    def detail(self) -> str:
        """Why the iteration ended, naming the file, record index and byte offset."""
        return self._detail

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Record:
        record = self._next_record() if self._stop is None else None
        if record is None:
            raise StopIteration
        return record

    def _read(self, count: int) -> bytes:
        try:
            return self._file.read(count)
        except OSError as exc:
            raise storage_error("reading segment", self._path, exc) from exc

    def _finish(self, reason: StopReason, what: str) -> None:
        self._stop = reason
        self._detail = f"{self._path}: {what}"
        if self._strict and reason is not StopReason.CLEAN:
            raise EvidenceError(self._detail)

    def _next_record(self) -> Record | None:
        index, offset = self._count, self._valid_size
        where = f"record {index} at byte {offset}"
        head = self._read(_HEAD.size)
        if not head:
            self._finish(StopReason.CLEAN, f"clean end after {index} records, {offset} bytes")
            return None
        if len(head) < _HEAD.size:
            self._finish(StopReason.TORN_RECORD, f"{where}: file ends inside the length field")
            return None
        length, code = _HEAD.unpack(head)
        if length > MAX_BODY_BYTES:
            self._finish(StopReason.BAD_LENGTH, f"{where}: length {length} > {MAX_BODY_BYTES}")
            return None
        rest = self._read(length + _U32.size)
        if len(rest) < length + _U32.size:
            need, have = RECORD_OVERHEAD + length, _HEAD.size + len(rest)
            self._finish(StopReason.TORN_RECORD, f"{where}: file ends {have} of {need} bytes in")
            return None
        body = memoryview(rest)[:length]
        computed, stored = zlib.crc32(body, zlib.crc32(head)), _U32.unpack_from(rest, length)[0]
        if computed != stored:
            what = f"CRC-32 mismatch (stored {stored:08x}, computed {computed:08x})"
            self._finish(StopReason.BAD_CRC, f"{where}: {what}")
            return None
        return self._accept(code, head, rest)

    def _accept(self, code: int, head: bytes, rest: bytes) -> Record | None:
        index, offset = self._count, self._valid_size
        body = memoryview(rest)[: len(rest) - _U32.size]
        problem, rtype, media = _decode_body(code, body)
        if problem or rtype is None:
            self._finish(StopReason.BAD_RECORD, f"record {index} at byte {offset}: {problem}")
            return None
        self._hash.update(head)
        self._hash.update(rest)
        size = RECORD_OVERHEAD + len(body)
        self._valid_size += size
        self._count += 1
        info = RecordInfo(index=index, offset=offset, size=size, type=rtype, media=media)
        skip = MEDIA_META_SIZE if media is not None else 0
        return Record(info, bytes(body[skip:]) if self._with_payload else b"")

    def _read_header(self) -> SegmentHeader | None:
        raw = bytearray()

        def take(count: int) -> bytes | None:
            data = self._read(count)
            raw.extend(data)
            return data if len(data) == count else None

        magic = take(len(MAGIC))
        if not MAGIC.startswith(bytes(raw[: len(MAGIC)])):
            raise EvidenceError(f"{self._path}: not a segment file (bad magic at byte 0)")
        version = None if magic is None else take(_U16.size)
        if version is not None and _U16.unpack(version)[0] != FORMAT_VERSION:
            found = _U16.unpack(version)[0]
            raise EvidenceError(f"{self._path}: unsupported segment format version {found}")
        fields = None if version is None else self._take_ids(take)
        crc = None if fields is None else take(_U32.size)
        if fields is None or crc is None:
            self._finish(StopReason.TORN_HEADER, f"file ends inside the header ({len(raw)} bytes)")
            return None
        header_bytes = bytes(raw[: -_U32.size])
        if zlib.crc32(header_bytes) != _U32.unpack(crc)[0]:
            raise EvidenceError(f"{self._path}: header CRC-32 mismatch (bytes 0-{len(raw) - 1})")
        header = self._header_from(fields)
        self._hash.update(raw)
        self._valid_size = len(raw)
        return header

    def _take_ids(self, take: Callable[[int], bytes | None]) -> tuple[bytes, bytes, int] | None:
        ids: list[bytes] = []
        for _ in range(2):
            size = take(_U16.size)
            if size is None:
                return None
            length = _U16.unpack(size)[0]
            if length > MAX_ID_BYTES:
                raise EvidenceError(f"{self._path}: header ID length {length} > {MAX_ID_BYTES}")
            value = take(length)
            if value is None:
                return None
            ids.append(value)
        index = take(_U32.size)
        return None if index is None else (ids[0], ids[1], _U32.unpack(index)[0])

    def _header_from(self, fields: tuple[bytes, bytes, int]) -> SegmentHeader:
        try:
            return SegmentHeader(fields[0].decode(), fields[1].decode(), fields[2])
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise EvidenceError(f"{self._path}: invalid header: {exc}") from exc


def _decode_body(code: int, body: memoryview) -> tuple[str, RecordType | None, MediaInfo | None]:
    """Problem (empty if none), type and media header of a CRC-valid record body."""
    try:
        rtype = RecordType(code)
    except ValueError:
        return f"unknown record type {code}", None, None
    if rtype is RecordType.MEDIA:
        if len(body) < MEDIA_META_SIZE:
            return f"MEDIA body of {len(body)} bytes < {MEDIA_META_SIZE}", None, None
        stream, packet, pts, duration, flags = _MEDIA.unpack_from(body)
        if flags & ~_KEYFRAME:
            return f"MEDIA flags {flags:#04x} has reserved bits set", None, None
        return "", rtype, MediaInfo(stream, packet, pts, duration, bool(flags & _KEYFRAME))
    try:
        json_document(bytes(body))
    except ValueError as exc:
        return f"{rtype.name} {exc}", None, None
    return "", rtype, None
