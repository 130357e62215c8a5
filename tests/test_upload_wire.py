"""Upload wire formats: the binary chunk codec and the JSON offer/ack codec."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import struct
import zlib
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, LocalProtocolError
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    CODE_STORAGE_FULL,
    Ack,
    AckState,
    Chunk,
    ChunkCrcError,
    Offer,
    chunk_message_size,
    decode_ack,
    decode_chunk,
    decode_offer,
    decode_upload_control,
    encode_chunk,
    encode_control,
    failed_ack,
    rejected_ack,
    unknown_ack,
)
from tests.fuzz import FUZZ_EXAMPLES
from tests.upload_support import offer_for, segment_bytes

SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
UPLOAD_ID = "00112233445566778899aabbccddeeff"

upload_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
offsets = st.integers(min_value=0, max_value=2**40)
payloads = st.binary(min_size=1, max_size=300)

# -- chunks ------------------------------------------------------------------------------------


def test_header_is_40_bytes() -> None:
    assert CHUNK_HEADER_SIZE == 40
    assert chunk_message_size(5) == 45


@given(upload_id=upload_ids, offset=offsets, data=payloads)
def test_chunk_round_trips(upload_id: str, offset: int, data: bytes) -> None:
    message = encode_chunk(upload_id, offset, data)
    assert len(message) == chunk_message_size(len(data))
    assert decode_chunk(message) == Chunk(upload_id=upload_id, offset=offset, data=data)


def test_chunk_accepts_any_buffer() -> None:
    data = bytearray(b"abc")
    assert encode_chunk(UPLOAD_ID, 0, data) == encode_chunk(UPLOAD_ID, 0, memoryview(data))
    assert decode_chunk(bytearray(encode_chunk(UPLOAD_ID, 0, data))).data == b"abc"


def test_worked_example_matches_the_spec() -> None:
    message = encode_chunk(UPLOAD_ID, 262144, b"hello")
    expected = (
        "4257434b 01 00 0000 00112233445566778899aabbccddeeff 0000000000040000 00000005 ce7e4f65 "
        "68656c6c6f"
    )
    assert message.hex() == expected.replace(" ", "")
    spec_hex = re.findall(r"^chunk bytes: ([0-9a-f ]+)$", SPEC.read_text(), re.MULTILINE)
    assert [h.replace(" ", "") for h in spec_hex] == [message.hex()]


def test_crc_covers_the_header() -> None:
    message = encode_chunk(UPLOAD_ID, 7, b"data")
    (crc,) = struct.unpack_from(">I", message, 36)
    assert crc == zlib.crc32(message[:36] + message[40:])


@given(data=st.binary(max_size=200))
@settings(max_examples=FUZZ_EXAMPLES)
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_chunk(data)


@given(data=st.binary(max_size=100))
@settings(max_examples=FUZZ_EXAMPLES)
def test_random_bytes_behind_a_valid_header_raise_only_decode_error(data: bytes) -> None:
    message = encode_chunk(UPLOAD_ID, 0, b"x")[:CHUNK_HEADER_SIZE] + data
    with contextlib.suppress(DecodeError):
        decode_chunk(message)


@given(
    offset=offsets,
    data=payloads,
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=2**32 - 1),
)
@settings(max_examples=FUZZ_EXAMPLES)
def test_every_burst_of_up_to_32_bits_is_detected(
    offset: int, data: bytes, position: int, mask: int
) -> None:
    message = bytearray(encode_chunk(UPLOAD_ID, offset, data))
    start = position % (len(message) - 3)
    window = int.from_bytes(message[start : start + 4], "big") ^ mask
    message[start : start + 4] = window.to_bytes(4, "big")
    with pytest.raises(DecodeError):
        decode_chunk(message)


@given(data=payloads, cut=st.integers(min_value=1))
def test_truncated_chunk_is_rejected(data: bytes, cut: int) -> None:
    message = encode_chunk(UPLOAD_ID, 0, data)
    with pytest.raises(DecodeError):
        decode_chunk(message[: -(1 + cut % len(message))])


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="length field says 1") as info:
        decode_chunk(encode_chunk(UPLOAD_ID, 0, b"x") + b"y")
    assert info.value.where == "byte 32"


def _patched(offset: int, fmt: str, value: int) -> bytes:
    message = bytearray(encode_chunk(UPLOAD_ID, 5, b"abc"))
    struct.pack_into(fmt, message, offset, value)
    return bytes(message)


@pytest.mark.parametrize(
    ("message", "where", "text"),
    [
        (b"BWCK", "byte 4", "shorter than the 40-byte header"),
        (b"XWCK" + encode_chunk(UPLOAD_ID, 0, b"a")[4:], "byte 0", "expected magic"),
        (_patched(4, ">B", 2), "byte 4", "unsupported chunk version 2"),
        (_patched(5, ">B", 1), "byte 5", "flags must be 0"),
        (_patched(6, ">H", 1), "byte 6", "reserved must be 0"),
        (_patched(32, ">I", 0)[:CHUNK_HEADER_SIZE], "byte 32", "at least one data byte"),
        (_patched(24, ">Q", 2**64 - 2), "byte 24", "does not fit in 64 bits"),
    ],
)
def test_decode_errors_name_the_byte(message: bytes, where: str, text: str) -> None:
    with pytest.raises(DecodeError, match=text) as info:
        decode_chunk(message)
    assert info.value.where == where
    assert not isinstance(info.value, ChunkCrcError)


def test_crc_error_is_distinct_and_carries_the_header() -> None:
    message = bytearray(encode_chunk(UPLOAD_ID, 1234, b"hello"))
    message[-1] ^= 0x01
    with pytest.raises(ChunkCrcError) as info:
        decode_chunk(message)
    assert (info.value.upload_id, info.value.offset, info.value.length) == (UPLOAD_ID, 1234, 5)
    assert info.value.where == "byte 36"


@pytest.mark.parametrize(
    ("upload_id", "offset", "data"),
    [
        ("0" * 31, 0, b"x"),
        ("G" * 32, 0, b"x"),
        ("A" * 32, 0, b"x"),
        (UPLOAD_ID, 0, b""),
        (UPLOAD_ID, -1, b"x"),
        (UPLOAD_ID, 2**64 - 1, b"x"),
    ],
)
def test_encode_refuses_invalid_chunks(upload_id: str, offset: int, data: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        encode_chunk(upload_id, offset, data)


# -- offers and acks -------------------------------------------------------------------------

offers = st.builds(
    lambda size, chunk, window: offer_for(segment_bytes(size), chunk_size=chunk, window=window),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=2**32 - 1),
    st.integers(min_value=1, max_value=1024),
)
codes = st.none() | st.from_regex(r"\A[a-z][a-z0-9_]{0,63}\Z")
texts = st.none() | st.text(max_size=500)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    state = draw(st.sampled_from(get_args(AckState)))
    return Ack(
        upload_id=draw(upload_ids),
        state=state,
        committed=draw(st.integers(min_value=0, max_value=2**53 - 1)),
        in_reply_to=draw(st.sampled_from(["offer", "chunk"])),
        sha256=hashlib.sha256(b"x").hexdigest() if state == "verified" else None,
        code=draw(codes),
        message=draw(texts),
    )


@given(offer=offers)
@settings(max_examples=50)
def test_offer_round_trips(offer: Offer) -> None:
    data = encode_control(offer)
    assert json.loads(data)["type"] == "offer"
    assert decode_offer(data) == offer
    assert decode_upload_control(data) == offer


@given(ack=acks())
def test_ack_round_trips(ack: Ack) -> None:
    data = encode_control(ack)
    assert json.loads(data)["type"] == "ack"
    assert decode_ack(data) == ack
    assert decode_upload_control(data) == ack


def test_helpers_build_valid_acks() -> None:
    for ack in (
        rejected_ack(UPLOAD_ID, "bad_signature", "no"),
        failed_ack(UPLOAD_ID, committed=5, code=CODE_STORAGE_FULL, in_reply_to="chunk"),
        unknown_ack(UPLOAD_ID, in_reply_to="chunk"),
    ):
        assert decode_ack(encode_control(ack)) == ack


def test_verified_ack_needs_sha256_and_only_it_has_one() -> None:
    good = {"v": 1, "type": "ack", "upload_id": UPLOAD_ID, "committed": 1, "in_reply_to": "chunk"}
    with pytest.raises(DecodeError, match="sha256 must be present"):
        decode_ack(json.dumps(good | {"state": "verified"}))
    with pytest.raises(DecodeError, match="sha256 must be present"):
        decode_ack(json.dumps(good | {"state": "receiving", "sha256": "0" * 64}))
    assert decode_ack(json.dumps(good | {"state": "receiving"})).committed == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"v": 2}, "$.v"),
        ({"upload_id": "0" * 31}, "$.upload_id"),
        ({"committed": -1}, "$.committed"),
        ({"committed": 2**53}, "$.committed"),
        ({"state": "done"}, "$.state"),
        ({"in_reply_to": "query"}, "$.in_reply_to"),
        ({"code": "Bad Code"}, "$.code"),
        ({"extra": 1}, "$"),
    ],
)
def test_ack_fields_are_checked(change: dict[str, object], where: str) -> None:
    good = {
        "v": 1,
        "type": "ack",
        "upload_id": UPLOAD_ID,
        "state": "receiving",
        "committed": 0,
        "in_reply_to": "offer",
    }
    with pytest.raises(DecodeError) as info:
        decode_upload_control(json.dumps(good | change))
    assert info.value.where == where


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"chunk_size": 0}, "$.chunk_size"),
        ({"chunk_size": 2**32}, "$.chunk_size"),
        ({"window": 0}, "$.window"),
        ({"window": 1025}, "$.window"),
        ({"signed_manifest": {"manifest": "{}"}}, "$.signed_manifest"),
    ],
)
def test_offer_fields_are_checked(change: dict[str, object], where: str) -> None:
    good = json.loads(encode_control(offer_for(b"abc")))
    with pytest.raises(DecodeError) as info:
        decode_offer(json.dumps(good | change))
    assert info.value.where == where


def test_oversized_control_message_is_refused() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode_upload_control(b" " * (64 * 1024 + 1))


def test_offer_is_not_an_ack() -> None:
    with pytest.raises(DecodeError):
        decode_ack(encode_control(offer_for(b"abc")))


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Field values for message-shaped objects: flat, so that generation stays cheap at 10,000 runs.
field_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=10), json_scalars, max_size=3)
)
control_fields = st.sampled_from(
    [
        *("v", "type", "upload_id", "state", "committed", "in_reply_to", "sha256", "code"),
        *("message", "signed_manifest", "chunk_size", "window"),
    ]
)
control_like = st.builds(
    lambda tag, fields: {"type": tag, **fields},
    st.sampled_from(["offer", "ack", "x"]),
    st.dictionaries(control_fields, field_values, max_size=8),
)


@given(data=st.binary(max_size=300))
@settings(max_examples=FUZZ_EXAMPLES)
def test_random_bytes_never_crash_the_control_decoder(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_upload_control(data)


@given(value=json_values | control_like)
@settings(max_examples=FUZZ_EXAMPLES)
def test_random_json_never_crashes_the_control_decoder(value: object) -> None:
    text = json.dumps(value)
    for decode in (decode_upload_control, decode_offer, decode_ack):
        with contextlib.suppress(DecodeError):
            decode(text)
