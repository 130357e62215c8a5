"""COBS byte stuffing and CRC-16/CCITT-FALSE: known vectors, round trips, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError
from protocol.serial import cobs_decode, cobs_encode, crc16
from tests.fuzz import FUZZ_EXAMPLES

# The examples of the COBS article on Wikipedia, which C implementations are tested against.
KNOWN = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), KNOWN)
def test_known_encodings(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_decoder_accepts_the_redundant_trailing_code_some_encoders_emit() -> None:
    assert cobs_decode(b"\xff" + bytes(range(1, 255)) + b"\x01") == bytes(range(1, 255))


@given(st.binary(max_size=2000))
def test_round_trip_of_any_bytes(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data
    # The documented overhead: one code byte per started 254 bytes, at least one.
    assert len(encoded) <= len(data) + len(data) // 254 + 1


@pytest.mark.parametrize(
    ("encoded", "where"),
    [
        (b"", None),
        (b"\x00", "byte 0"),
        (b"\x03\x11", "byte 0"),
        (b"\x02\x11\x05\x22", "byte 2"),
        (b"\x03\x11\x00", "byte 2"),
        (b"\x02\x11\x00\x01", "byte 2"),
    ],
)
def test_malformed_input_raises_decode_error_with_offset(encoded: bytes, where: str | None) -> None:
    with pytest.raises(DecodeError) as caught:
        cobs_decode(encoded)
    assert caught.value.where == where


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=600))
def test_decoding_random_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        decoded = cobs_decode(data)
    except DecodeError:
        return
    assert cobs_encode(decoded) in (data, data[:-1])


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize(
    ("data", "crc"),
    [(b"", 0xFFFF), (b"\x00", 0xE1F0), (b"A", 0xB915), (b"\xff" * 4, 0x1D0F)],
)
def test_crc16_other_vectors(data: bytes, crc: int) -> None:
    assert crc16(data) == crc
