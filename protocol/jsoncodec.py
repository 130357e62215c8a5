"""Strict JSON encoding and decoding shared by every JSON message family.

msgspec does the typed decoding (unknown fields, wrong types, missing fields, constraints); this
module bounds the input size and turns every failure into the one documented ``DecodeError``
with the JSON path of the offending field.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

import msgspec

from protocol.errors import DecodeError, LocalProtocolError

T = TypeVar("T")

MAX_JSON_MESSAGE_BYTES: Final = 64 * 1024
"""Largest JSON message accepted (status, telemetry, events, commands, replies, upload control)."""

_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_PATH_SUFFIX: Final = re.compile(r" - at `(?P<path>[^`]*)`$")


def encode_json(message: object) -> bytes:
    """Encode a message struct as compact JSON with keys in sorted order (stable bytes)."""
    return _ENCODER.encode(message)


def encode_checked(message: object, *, max_bytes: int = MAX_JSON_MESSAGE_BYTES) -> bytes:
    """Encode ``message`` and check that a strict peer would accept it.

    msgspec validates constraints only when decoding, so our own messages are decoded back once;
    a message we built wrongly raises ``LocalProtocolError`` here instead of being rejected by the
    peer later.
    """
    data = encode_json(message)
    try:
        decode_json(data, type(message), max_bytes=max_bytes)
    except DecodeError as exc:
        raise LocalProtocolError(
            f"refusing to send an invalid {type(message).__name__}: {exc}"
        ) from exc
    return data


def decode_json(data: bytes | str, message_type: type[T], *, max_bytes: int) -> T:
    """Decode ``data`` into ``message_type``, or raise ``DecodeError`` naming the field at fault."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise DecodeError(f"payload of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        return msgspec.json.decode(raw, type=message_type, strict=True)
    except msgspec.ValidationError as exc:
        raise _translate(exc) from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc


def _translate(exc: msgspec.ValidationError) -> DecodeError:
    text = str(exc)
    match = _PATH_SUFFIX.search(text)
    if match is None:
        # msgspec names no path for problems with the top-level object itself.
        return DecodeError(text, where="$")
    return DecodeError(text[: match.start()], where=match.group("path"))
