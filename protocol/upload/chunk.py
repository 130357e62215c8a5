"""The binary chunk message: one piece of a segment, sent device -> receiver.

Chunks carry the bulk of the data, so they are raw bytes behind a fixed 40-byte big-endian header
instead of base64 inside JSON (a third less on the wire and no encode/decode pass). The header
names the upload, the byte offset and the length; a CRC-32 covers the header fields *and* the data,
so a flipped bit in the offset is caught as surely as one in the data (a CRC of the data alone
would let a damaged offset write good bytes to the wrong place). The whole-file SHA-256 checked at
the end is the real integrity guarantee; the CRC is there so that damage is caught per chunk and
never committed.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from protocol.errors import DecodeError, LocalProtocolError

CHUNK_MAGIC: Final = b"BWCK"
CHUNK_VERSION: Final = 1

_HEADER: Final = struct.Struct(">4sBBH16sQII")
CHUNK_HEADER_SIZE: Final = _HEADER.size
"""Bytes before the data: magic 4, version 1, flags 1, reserved 2, upload_id 16, offset 8,
length 4, crc32 4 = 40."""

_CRC_START: Final = CHUNK_HEADER_SIZE - 4
"""The CRC covers header bytes ``[0, 36)`` (everything before the CRC field), then the data."""

MAX_CHUNK_DATA: Final = 2**32 - 1
"""Largest data length the u32 length field can express."""

_MAX_END: Final = 2**64 - 1
_UPLOAD_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


class ChunkCrcError(DecodeError):
    """A chunk was well formed but its CRC-32 did not match: it was damaged in transit.

    Kept distinct from other ``DecodeError`` s so a receiver can count damaged chunks. The header
    fields are attached for routing and statistics only: they are covered by the failed CRC, so
    they are untrusted and must never be used to commit data.
    """

    def __init__(self, message: str, *, upload_id: str, offset: int, length: int) -> None:
        self.upload_id = upload_id
        self.offset = offset
        self.length = length
        super().__init__(message, where="byte 36")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A decoded chunk whose CRC matched: ``data`` belongs at ``offset`` of upload ``upload_id``."""

    upload_id: str
    """32 lowercase hex characters, as in the JSON messages."""
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _check_fields(self.upload_id, self.offset, len(self.data))

    @property
    def end(self) -> int:
        """Offset one past the last byte: ``offset + len(data)``."""
        return self.offset + len(self.data)


def _check_fields(upload_id: str, offset: int, length: int) -> None:
    if _UPLOAD_ID_RE.fullmatch(upload_id) is None:
        raise LocalProtocolError(f"upload_id {upload_id!r} is not 32 lowercase hex characters")
    if not 1 <= length <= MAX_CHUNK_DATA:
        raise LocalProtocolError(f"chunk data must be 1 to {MAX_CHUNK_DATA} bytes, got {length}")
    if offset < 0 or offset + length > _MAX_END:
        raise LocalProtocolError(f"chunk offset {offset} + length {length} is out of range")


def chunk_message_size(length: int) -> int:
    """Size in bytes of the chunk message that carries ``length`` data bytes."""
    return CHUNK_HEADER_SIZE + length


def encode_chunk(upload_id: str, offset: int, data: bytes | bytearray | memoryview) -> bytes:
    """Build the chunk message for ``data`` at ``offset`` of ``upload_id`` (32 hex characters).

    Raises ``LocalProtocolError`` for an invalid upload ID, empty data or an out-of-range offset.
    """
    length = len(data)
    _check_fields(upload_id, offset, length)
    prefix = _HEADER.pack(
        CHUNK_MAGIC, CHUNK_VERSION, 0, 0, bytes.fromhex(upload_id), offset, length, 0
    )
    crc = zlib.crc32(data, zlib.crc32(prefix[:_CRC_START]))
    return b"".join((prefix[:_CRC_START], crc.to_bytes(4, "big"), data))


def decode_chunk(message: bytes | bytearray | memoryview) -> Chunk:
    """Parse a chunk message.

    Raises ``ChunkCrcError`` if the CRC does not match and ``DecodeError`` (with the byte offset
    in ``where``) for anything else: too short, bad magic, unknown version, non-zero flags or
    reserved bits, a length field that disagrees with the bytes present, empty data, or an offset
    so large that the end does not fit in 64 bits.
    """
    view = memoryview(message)
    if len(view) < CHUNK_HEADER_SIZE:
        raise DecodeError(
            f"chunk message of {len(view)} bytes is shorter than the "
            f"{CHUNK_HEADER_SIZE}-byte header",
            where=f"byte {len(view)}",
        )
    magic, version, flags, reserved, raw_id, offset, length, crc = _HEADER.unpack_from(view)
    _check_header(magic, version, flags, reserved)
    _check_length(offset, length, len(view) - CHUNK_HEADER_SIZE)
    data = view[CHUNK_HEADER_SIZE:]
    actual = zlib.crc32(data, zlib.crc32(view[:_CRC_START]))
    if actual != crc:
        raise ChunkCrcError(
            f"chunk CRC-32 is {actual:08x} but the header says {crc:08x}",
            upload_id=raw_id.hex(),
            offset=offset,
            length=length,
        )
    return Chunk(upload_id=raw_id.hex(), offset=offset, data=data.tobytes())


def _check_header(magic: bytes, version: int, flags: int, reserved: int) -> None:
    if magic != CHUNK_MAGIC:
        raise DecodeError(f"expected magic {CHUNK_MAGIC!r}, found {magic!r}", where="byte 0")
    if version != CHUNK_VERSION:
        raise DecodeError(
            f"unsupported chunk version {version} (this side speaks {CHUNK_VERSION})",
            where="byte 4",
        )
    # Unknown flags could change how the data must be read, so they are refused, not skipped.
    if flags != 0:
        raise DecodeError(f"flags must be 0 in version 1, found 0x{flags:02x}", where="byte 5")
    if reserved != 0:
        raise DecodeError(f"reserved must be 0, found 0x{reserved:04x}", where="byte 6")


def _check_length(offset: int, length: int, present: int) -> None:
    if length != present:
        raise DecodeError(
            f"length field says {length} data bytes but {present} follow the header",
            where="byte 32",
        )
    if length == 0:
        raise DecodeError("a chunk must carry at least one data byte", where="byte 32")
    if offset + length > _MAX_END:
        raise DecodeError(
            f"offset {offset} + length {length} does not fit in 64 bits", where="byte 24"
        )
