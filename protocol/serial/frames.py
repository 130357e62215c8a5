"""Frames of the serial bench link, and a streaming decoder that survives any input.

On the wire a frame is ``COBS(version | type | flags | seq | payload | crc16)`` followed by one
0x00 delimiter (layout in ``docs/protocol.md``, "Serial bench link"). ``encode_frame`` builds one;
``FrameDecoder`` turns an arbitrarily split byte stream back into frames, dropping and counting
anything that is not a valid frame, and never raising.

Only three things are promised to stay the same in every future protocol version: COBS with a
0x00 delimiter, the version in the first byte, and the CRC-16 in the last two. That is what lets
the decoder trust the version byte of a CRC-valid frame and report a version mismatch, instead of
mistaking line noise for a peer running other firmware.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final

from protocol.errors import DecodeError, LocalProtocolError
from protocol.serial.cobs import cobs_decode, cobs_encode, crc16

SERIAL_PROTOCOL_VERSION: Final = 1
"""Version byte of every frame this code sends and accepts."""

MAX_PAYLOAD: Final = 1024
"""Largest payload of one frame, in bytes."""

_HEADER = struct.Struct(">BBBH")
_CRC = struct.Struct(">H")
HEADER_SIZE: Final = _HEADER.size
"""Bytes before the payload: version, type, flags, seq."""

MIN_FRAME: Final = HEADER_SIZE + _CRC.size
"""Smallest decoded frame (empty payload)."""

MAX_FRAME: Final = MIN_FRAME + MAX_PAYLOAD
"""Largest decoded frame."""

MAX_ENCODED_FRAME: Final = MAX_FRAME + (MAX_FRAME + 253) // 254
"""Largest COBS-encoded frame, without its delimiter: longer runs are discarded unread."""


class FrameFlag(enum.IntFlag):
    """Bits of the frame's ``flags`` byte; bits 1-7 are reserved, sent as 0, ignored."""

    ACK_REQUESTED = 0x01
    """The receiver must answer with ``Ack(seq)``: a reliable frame."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: header fields and the still-encoded payload."""

    type_code: int
    seq: int
    payload: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("type_code", self.type_code, 0xFF),
            ("seq", self.seq, 0xFFFF),
            ("flags", self.flags, 0xFF),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise LocalProtocolError(f"Frame.{name}: expected int 0..{limit}, got {value!r}")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_PAYLOAD:
            size = len(self.payload) if isinstance(self.payload, bytes) else self.payload
            raise LocalProtocolError(f"Frame.payload: expected <= {MAX_PAYLOAD} bytes, got {size}")

    @property
    def ack_requested(self) -> bool:
        """Whether the sender asked for an ``Ack`` (a reliable frame)."""
        return bool(self.flags & FrameFlag.ACK_REQUESTED)


class FrameCrcError(DecodeError):
    """The CRC-16 at the end of a frame does not match its contents."""


class FrameLengthError(DecodeError):
    """A frame is shorter than a header and CRC, or longer than the largest frame."""

    def __init__(self, message: str, *, too_long: bool) -> None:
        self.too_long = too_long
        super().__init__(message)


class FrameVersionError(DecodeError):
    """A CRC-valid frame carries another protocol version; ``version`` is the peer's."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"frame has serial protocol version {version}, this side speaks "
            f"{SERIAL_PROTOCOL_VERSION}",
            where="byte 0",
        )


def encode_frame(frame: Frame) -> bytes:
    """Return the bytes to write for ``frame``: COBS-encoded, followed by 0x00."""
    raw = _HEADER.pack(SERIAL_PROTOCOL_VERSION, frame.type_code, frame.flags, frame.seq)
    raw += frame.payload
    return cobs_encode(raw + _CRC.pack(crc16(raw))) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame from its COBS bytes (between two delimiters, neither included).

    Raises ``DecodeError`` (COBS errors), ``FrameLengthError``, ``FrameCrcError`` or
    ``FrameVersionError``, checked in that order: the version is only believed once the CRC
    holds.
    """
    if len(encoded) > MAX_ENCODED_FRAME:
        raise FrameLengthError(
            f"encoded frame of {len(encoded)} bytes, max {MAX_ENCODED_FRAME}", too_long=True
        )
    raw = cobs_decode(encoded)
    if not MIN_FRAME <= len(raw) <= MAX_FRAME:
        raise FrameLengthError(
            f"frame of {len(raw)} bytes, expected {MIN_FRAME}..{MAX_FRAME}",
            too_long=len(raw) > MAX_FRAME,
        )
    body, (received,) = raw[:-2], _CRC.unpack(raw[-2:])
    expected = crc16(body)
    if received != expected:
        raise FrameCrcError(
            f"CRC mismatch: frame says 0x{received:04X}, contents give 0x{expected:04X}",
            where=f"byte {len(body)}",
        )
    version, type_code, flags, seq = _HEADER.unpack(body[:HEADER_SIZE])
    if version != SERIAL_PROTOCOL_VERSION:
        raise FrameVersionError(version)
    return Frame(type_code=type_code, seq=seq, payload=body[HEADER_SIZE:], flags=flags)


@dataclass(slots=True)
class DecoderCounters:
    """What a ``FrameDecoder`` has seen; every dropped run is counted exactly once."""

    frames_ok: int = 0
    bytes_dropped: int = 0
    """Bytes of every discarded run (delimiters excluded)."""
    crc_errors: int = 0
    cobs_errors: int = 0
    oversize: int = 0
    """Runs longer than ``MAX_ENCODED_FRAME``, or decoding to more than ``MAX_FRAME`` bytes."""
    short_frames: int = 0
    bad_version: int = 0

    @property
    def resyncs(self) -> int:
        """Discarded runs, whatever the reason: each is a resynchronisation at a 0x00."""
        return (
            self.crc_errors
            + self.cobs_errors
            + self.oversize
            + self.short_frames
            + self.bad_version
        )


@dataclass(slots=True)
class FrameDecoder:
    """Streaming decoder: feed it bytes as they arrive, in any split, and get frames back.

    It never raises. Garbage is discarded up to the next 0x00; a run longer than the largest
    valid frame is discarded without being buffered, so memory stays bounded whatever arrives.
    Back-to-back 0x00 bytes (empty runs) are ignored silently: a sender may use them to flush a
    receiver. A CRC-valid frame of another protocol version is dropped, counted in
    ``counters.bad_version``, and its version kept in ``last_bad_version`` for the link to
    report.
    """

    counters: DecoderCounters = field(default_factory=DecoderCounters)
    last_bad_version: int | None = None
    _buffer: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _discarding: bool = field(default=False, init=False, repr=False)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return the frames it completed, in order."""
        frames: list[Frame] = []
        start = 0
        while (end := data.find(0, start)) >= 0:
            self._collect(data[start:end])
            frame = self._end_of_run()
            if frame is not None:
                frames.append(frame)
            start = end + 1
        self._collect(data[start:])
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for a frame whose delimiter has not arrived yet."""
        return len(self._buffer)

    def _collect(self, chunk: bytes) -> None:
        if self._discarding:
            self.counters.bytes_dropped += len(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > MAX_ENCODED_FRAME:
            self.counters.oversize += 1
            self.counters.bytes_dropped += len(self._buffer)
            self._buffer.clear()
            self._discarding = True

    def _end_of_run(self) -> Frame | None:
        if self._discarding:
            self._discarding = False
            return None
        if not self._buffer:
            return None
        run = bytes(self._buffer)
        self._buffer.clear()
        try:
            frame = decode_frame(run)
        except DecodeError as error:
            self._count_rejection(error)
            self.counters.bytes_dropped += len(run)
            return None
        self.counters.frames_ok += 1
        return frame

    def _count_rejection(self, error: DecodeError) -> None:
        counters = self.counters
        if isinstance(error, FrameCrcError):
            counters.crc_errors += 1
        elif isinstance(error, FrameVersionError):
            counters.bad_version += 1
            self.last_bad_version = error.version
        elif isinstance(error, FrameLengthError) and error.too_long:
            counters.oversize += 1
        elif isinstance(error, FrameLengthError):
            counters.short_frames += 1
        else:
            counters.cobs_errors += 1
