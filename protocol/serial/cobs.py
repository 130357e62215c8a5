"""COBS byte stuffing and the CRC-16 used by the serial bench link.

Consistent Overhead Byte Stuffing (Cheshire and Baker, 1999) rewrites a frame so that it contains
no 0x00 byte; 0x00 is then free to mark the end of every frame on the wire, and a receiver that
lost sync (line noise, a reset half-way through a frame) finds the next frame at the next 0x00.
The encoding costs one byte per started 254 bytes of input.

The CRC is CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final
XOR. ``binascii.crc_hqx`` computes exactly that in C, which keeps this module stdlib-only.
"""

from __future__ import annotations

import binascii
from typing import Final

from protocol.errors import DecodeError

_MAX_BLOCK: Final = 254
"""Longest run of non-zero bytes one COBS code byte can describe (code 0xFF)."""

CRC16_INIT: Final = 0xFFFF
"""Initial register value of CRC-16/CCITT-FALSE."""


def crc16(data: bytes) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    return binascii.crc_hqx(data, CRC16_INIT)


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data`` so that the result contains no 0x00 byte.

    The output is canonical COBS: a final run of exactly 254 non-zero bytes is not followed by a
    redundant 0x01 code, so the result matches the common C implementations byte for byte.
    """
    out = bytearray()
    chunks = data.split(b"\x00")
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        pos = 0
        while len(chunk) - pos >= _MAX_BLOCK:
            out.append(_MAX_BLOCK + 1)
            out += chunk[pos : pos + _MAX_BLOCK]
            pos += _MAX_BLOCK
        rest = chunk[pos:]
        # A chunk that ended on a full block needs a closing code only if a zero follows it
        # (the 0xFF code carries no implied zero) or if it was empty to begin with.
        if rest or pos == 0 or index < last:
            out.append(len(rest) + 1)
            out += rest
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS-encoded frame (without its 0x00 delimiter).

    Raises ``DecodeError`` when ``data`` is empty, contains a 0x00 byte, or has a code byte that
    points past its end; ``where`` gives the byte offset of the fault.
    """
    if not data:
        raise DecodeError("COBS: empty input; an encoded frame is at least one byte")
    out = bytearray()
    pos = 0
    size = len(data)
    while pos < size:
        code = data[pos]
        if code == 0:
            raise DecodeError("COBS: unexpected 0x00 code byte", where=f"byte {pos}")
        end = pos + code
        if end > size:
            raise DecodeError(
                f"COBS: code 0x{code:02X} needs {code - 1} data bytes, only {size - pos - 1} left",
                where=f"byte {pos}",
            )
        block = data[pos + 1 : end]
        zero = block.find(0)
        if zero >= 0:
            raise DecodeError("COBS: unexpected 0x00 data byte", where=f"byte {pos + 1 + zero}")
        out += block
        pos = end
        # Every block except a full one (0xFF) and the last stands for "data, then a zero".
        if code != _MAX_BLOCK + 1 and pos < size:
            out.append(0)
    return bytes(out)
