"""Audit log shipping: the device's ``audit.log`` copied, byte for byte, to the evidence receiver.

Two messages. ``AuditRange`` (device -> receiver, binary, on ``.../audit``) carries whole lines
of the log starting at a byte ``offset``; ``AuditAck`` (receiver -> device, JSON, on
``.../audit/ack``) answers every range with the receiver's durable ``length`` of that device's
copy and the hash of its last line (``head``). The receiver appends a range only when its
``offset`` equals that length, after checking that the lines continue the hash chain, so ranges
are idempotent and a device resumes from any ack. The specification is the "Audit log shipping"
section of ``docs/protocol.md``.

A range is raw bytes behind a fixed 24-byte header, like an upload chunk: the lines are already
ASCII JSON, and base64 or JSON string escaping would only make them longer. A CRC-32 covers the
header fields and the data, so damage in transit is dropped and resent, never mistaken for a log
that breaks its chain (which is rejected for good).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from protocol.errors import DecodeError, LocalProtocolError
from protocol.ids import Sha256Hex
from protocol.jsoncodec import MAX_JSON_MESSAGE_BYTES, decode_json, encode_checked

AUDIT_MAGIC: Final = b"BWCA"
AUDIT_VERSION: Final = 1

_HEADER: Final = struct.Struct(">4sBBHQII")
AUDIT_HEADER_SIZE: Final = _HEADER.size
"""Bytes before the data: magic 4, version 1, flags 1, reserved 2, offset 8, length 4, crc32 4."""
_CRC_START: Final = AUDIT_HEADER_SIZE - 4

MAX_AUDIT_DATA: Final = 64 * 1024
"""Most data bytes in one range: one audit line of the longest size the log allows."""
MAX_AUDIT_MESSAGE: Final = AUDIT_HEADER_SIZE + MAX_AUDIT_DATA
"""Largest range message, 65,560 bytes: fits every common broker (AWS IoT Core takes 128 KB)."""
MAX_AUDIT_OFFSET: Final = 2**53 - 1
"""Largest offset: the same bound as JSON byte counts, so the ack can echo it exactly."""

AuditAckState = Literal["stored", "resend", "rejected", "failed"]
"""``stored``: the range is held (appended now, or already). ``resend``: nothing appended, the
range did not start at ``length``; send from there. ``rejected``: permanent, the log is refused
(``code`` says why); never resend it. ``failed``: transient (storage), retry later from
``length``."""

# Permanent rejection codes.
CODE_CHAIN_BROKEN: Final = "chain_broken"
CODE_BAD_GENESIS: Final = "bad_genesis"
CODE_BAD_SIGNATURE: Final = "bad_signature"
CODE_UNKNOWN_DEVICE: Final = "unknown_device"
# Transient failure codes.
CODE_STORAGE_FULL: Final = "storage_full"
CODE_STORAGE_ERROR: Final = "storage_error"

_ByteCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AUDIT_OFFSET)]
_ReasonCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}\Z")]
_HumanText = Annotated[str, msgspec.Meta(max_length=500)]


class AuditRangeCrcError(DecodeError):
    """A well-formed range whose CRC-32 did not match: damaged in transit; drop it, never answer.

    ``offset`` is from the damaged header: for statistics only, never to be trusted.
    """

    def __init__(self, message: str, *, offset: int) -> None:
        self.offset = offset
        super().__init__(message, where=f"byte {_CRC_START}")


@dataclass(frozen=True, slots=True)
class AuditRange:
    """``data`` (whole lines, or nothing: a position query) belongs at ``offset`` of the log."""

    offset: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= MAX_AUDIT_OFFSET - len(self.data):
            raise LocalProtocolError(f"audit range offset {self.offset} is out of range")
        if len(self.data) > MAX_AUDIT_DATA:
            raise LocalProtocolError(
                f"audit range of {len(self.data)} bytes exceeds {MAX_AUDIT_DATA} bytes"
            )

    @property
    def end(self) -> int:
        """Offset one past the last byte."""
        return self.offset + len(self.data)


def encode_audit_range(offset: int, data: bytes) -> bytes:
    """The range message for ``data`` at ``offset``: empty, or whole lines ending in ``\\n``.

    ``LocalProtocolError`` for data that ends inside a line, is too long, or a bad offset.
    """
    if data and not data.endswith(b"\n"):
        raise LocalProtocolError("an audit range must end with a whole line (a final newline)")
    AuditRange(offset, data)  # validates offset and size
    prefix = _HEADER.pack(AUDIT_MAGIC, AUDIT_VERSION, 0, 0, offset, len(data), 0)
    crc = zlib.crc32(data, zlib.crc32(prefix[:_CRC_START]))
    return b"".join((prefix[:_CRC_START], crc.to_bytes(4, "big"), data))


def decode_audit_range(message: bytes | bytearray | memoryview) -> AuditRange:
    """Parse a range message.

    ``AuditRangeCrcError`` if the CRC does not match; ``DecodeError`` (``where`` is a byte offset)
    for a short message, wrong magic, another version, non-zero flags or reserved bits, a length
    that disagrees with the bytes present, or data or an offset out of range. Whether the data
    holds whole, valid lines is the receiver's check (a permanent rejection, not a decode error).
    """
    view = memoryview(message)
    if len(view) < AUDIT_HEADER_SIZE:
        raise DecodeError(
            f"audit range of {len(view)} bytes is shorter than the {AUDIT_HEADER_SIZE}-byte header",
            where=f"byte {len(view)}",
        )
    magic, version, flags, reserved, offset, length, crc = _HEADER.unpack_from(view)
    if magic != AUDIT_MAGIC:
        raise DecodeError(f"expected magic {AUDIT_MAGIC!r}, found {magic!r}", where="byte 0")
    if version != AUDIT_VERSION:
        raise DecodeError(
            f"unsupported audit range version {version} (this side speaks {AUDIT_VERSION})",
            where="byte 4",
        )
    if flags or reserved:
        raise DecodeError("flags and reserved bits must be 0 in version 1", where="byte 5")
    present = len(view) - AUDIT_HEADER_SIZE
    if length != present:
        raise DecodeError(
            f"length field says {length} data bytes but {present} follow the header",
            where="byte 16",
        )
    if length > MAX_AUDIT_DATA or offset > MAX_AUDIT_OFFSET - length:
        raise DecodeError(f"offset {offset} or length {length} out of range", where="byte 8")
    data = view[AUDIT_HEADER_SIZE:]
    actual = zlib.crc32(data, zlib.crc32(view[:_CRC_START]))
    if actual != crc:
        raise AuditRangeCrcError(
            f"audit range CRC-32 is {actual:08x} but the header says {crc:08x}", offset=offset
        )
    return AuditRange(offset, data.tobytes())


class AuditAck(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
    tag="audit_ack",
):
    """Receiver -> device: where the receiver's copy of the log stands after a range.

    ``offset`` echoes the range answered (a device ignores acks for ranges no longer in flight).
    ``length`` is the durable size of the receiver's copy and ``head`` the ``hash`` of its last
    line (``null`` exactly when ``length`` is 0). ``code`` is present exactly when ``state`` is
    ``rejected`` or ``failed``.
    """

    v: Literal[1] = 1
    offset: _ByteCount
    state: AuditAckState
    length: _ByteCount
    head: Sha256Hex | None = None
    code: _ReasonCode | None = None
    message: _HumanText | None = None

    def __post_init__(self) -> None:
        # ValueError here becomes a DecodeError when decoding, naming the rule.
        if (self.length == 0) != (self.head is None):
            raise ValueError("head must be present exactly when length is above 0")
        if (self.state in ("rejected", "failed")) != (self.code is not None):
            raise ValueError("code must be present exactly when state is rejected or failed")


def encode_audit_ack(ack: AuditAck) -> bytes:
    """Compact JSON for an ack; ``LocalProtocolError`` if a field is out of range."""
    return encode_checked(ack)


def decode_audit_ack(data: bytes | str) -> AuditAck:
    """Decode an ack (the payload of the ``audit/ack`` topic); ``DecodeError`` names the field."""
    return decode_json(data, AuditAck, max_bytes=MAX_JSON_MESSAGE_BYTES)


__all__ = [
    "AUDIT_HEADER_SIZE",
    "AUDIT_MAGIC",
    "AUDIT_VERSION",
    "CODE_BAD_GENESIS",
    "CODE_BAD_SIGNATURE",
    "CODE_CHAIN_BROKEN",
    "CODE_STORAGE_ERROR",
    "CODE_STORAGE_FULL",
    "CODE_UNKNOWN_DEVICE",
    "MAX_AUDIT_DATA",
    "MAX_AUDIT_MESSAGE",
    "MAX_AUDIT_OFFSET",
    "AuditAck",
    "AuditAckState",
    "AuditRange",
    "AuditRangeCrcError",
    "decode_audit_ack",
    "decode_audit_range",
    "encode_audit_ack",
    "encode_audit_range",
]
