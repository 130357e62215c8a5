"""Frame codec and streaming decoder: round trips, any split, garbage, bounded memory, counters."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.serial import (
    MAX_ENCODED_FRAME,
    MAX_PAYLOAD,
    Ack,
    Button,
    ButtonEdge,
    Frame,
    FrameCrcError,
    FrameDecoder,
    FrameFlag,
    FrameLengthError,
    FrameVersionError,
    SerialMessage,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    decode_message,
    encode_frame,
)
from protocol.serial.frames import MAX_FRAME
from tests.fuzz import FUZZ_EXAMPLES
from tests.serial_support import frames, messages

ROOT = Path(__file__).resolve().parent.parent


def _stream(items: list[Frame]) -> bytes:
    return b"".join(encode_frame(frame) for frame in items)


def _raw_frame(version: int, type_code: int, flags: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack(">BBBH", version, type_code, flags, seq) + payload
    return cobs_encode(body + struct.pack(">H", crc16(body))) + b"\x00"


@given(messages, st.integers(0, 0xFFFF), st.booleans())
def test_every_message_type_survives_a_frame_round_trip(
    message: SerialMessage, seq: int, reliable: bool
) -> None:
    flags = FrameFlag.ACK_REQUESTED if reliable else 0
    frame = Frame(message.TYPE, seq, message.pack(), int(flags))
    wire = encode_frame(frame)
    assert wire.count(0) == 1
    assert wire.endswith(b"\x00")
    (decoded,) = FrameDecoder().feed(wire)
    assert decoded == frame
    assert decoded.ack_requested is reliable
    assert decode_message(decoded.type_code, decoded.payload) == message


@given(frames)
def test_any_frame_round_trips_through_decode_frame(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert len(wire) - 1 <= MAX_ENCODED_FRAME
    assert decode_frame(wire[:-1]) == frame


@given(st.lists(frames, min_size=1, max_size=6), st.data())
def test_any_split_of_a_stream_yields_the_same_frames(
    items: list[Frame], data: st.DataObject
) -> None:
    stream = _stream(items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == items
    assert decoder.counters.frames_ok == len(items)
    assert decoder.counters.bytes_dropped == 0
    assert decoder.buffered == 0


@given(st.lists(frames, min_size=1, max_size=4))
def test_one_byte_at_a_time(items: list[Frame]) -> None:
    decoder = FrameDecoder()
    out: list[Frame] = []
    for byte in _stream(items):
        out += decoder.feed(bytes([byte]))
    assert out == items


@given(
    st.lists(frames, max_size=3),
    st.binary(min_size=1, max_size=3000),
    st.lists(frames, min_size=1, max_size=3),
)
def test_frames_after_the_garbage_last_delimiter_all_come_through(
    before: list[Frame], garbage: bytes, after: list[Frame]
) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(_stream(before) + garbage + _stream(after))
    assert out[: len(before)] == before
    # Garbage without a final 0x00 merges with the first frame after it: only that one may go.
    survivors = after if garbage.endswith(b"\x00") else after[1:]
    assert out[len(out) - len(survivors) :] == survivors
    assert decoder.buffered == 0


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.lists(st.binary(max_size=700), max_size=8))
def test_random_bytes_never_raise_and_memory_stays_bounded(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        decoder.feed(chunk)
        assert decoder.buffered <= MAX_ENCODED_FRAME
    total = sum(len(chunk) for chunk in chunks)
    assert decoder.counters.bytes_dropped + decoder.buffered <= total


def test_an_oversize_run_is_discarded_without_being_buffered() -> None:
    decoder = FrameDecoder()
    frame = Frame(0x10, 7, b"abc")
    for _ in range(10):
        assert decoder.feed(b"\x55" * 500) == []
        assert decoder.buffered <= MAX_ENCODED_FRAME
    assert decoder.feed(b"\x00" + encode_frame(frame)) == [frame]
    assert decoder.counters.oversize == 1
    assert decoder.counters.bytes_dropped == 5000
    assert decoder.counters.resyncs == 1


def test_largest_frame_fits_the_bound_exactly() -> None:
    assert len(cobs_encode(b"\xff" * MAX_FRAME)) == MAX_ENCODED_FRAME
    frame = Frame(0xFF, 0xFFFF, b"\xff" * MAX_PAYLOAD, 0xFF)
    assert FrameDecoder().feed(encode_frame(frame)) == [frame]


def test_a_run_decoding_to_more_than_the_largest_frame_counts_as_oversize() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(cobs_encode(bytes(MAX_FRAME + 1)) + b"\x00") == []
    assert decoder.counters.oversize == 1
    with pytest.raises(FrameLengthError):
        decode_frame(cobs_encode(bytes(MAX_FRAME + 1)))


def test_back_to_back_delimiters_are_ignored_silently() -> None:
    decoder = FrameDecoder()
    frame = Frame(0x02, 1, b"\x00\x00\x00\x01")
    assert decoder.feed(b"\x00\x00\x00" + encode_frame(frame) + b"\x00\x00") == [frame]
    assert decoder.counters.resyncs == 0
    assert decoder.counters.bytes_dropped == 0


def test_bad_crc_is_dropped_and_counted() -> None:
    good = encode_frame(Frame(0x10, 1, b"\x01\x02\x03"))
    bad = bytearray(good)
    bad[6] ^= 0x40
    decoder = FrameDecoder()
    assert decoder.feed(bytes(bad) + good) == [Frame(0x10, 1, b"\x01\x02\x03")]
    assert decoder.counters.crc_errors == 1
    assert decoder.counters.bytes_dropped == len(good) - 1
    with pytest.raises(FrameCrcError):
        decode_frame(bytes(bad[:-1]))


def test_short_frames_and_cobs_errors_are_counted_separately() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(cobs_encode(b"\x01\x10\x00") + b"\x00" + b"\x05\x01\x00") == []
    assert decoder.counters.short_frames == 1
    assert decoder.counters.cobs_errors == 1
    assert decoder.counters.resyncs == 2


def test_other_version_is_dropped_counted_and_remembered() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(_raw_frame(2, 0x01, 0, 0, b"hello")) == []
    assert decoder.counters.bad_version == 1
    assert decoder.last_bad_version == 2
    with pytest.raises(FrameVersionError) as caught:
        decode_frame(_raw_frame(7, 0x01, 0, 0, b"")[:-1])
    assert caught.value.version == 7


def test_version_is_believed_only_when_the_crc_holds() -> None:
    corrupt = bytearray(_raw_frame(2, 0x01, 0, 0, b"hello"))
    corrupt[3] ^= 0x01
    decoder = FrameDecoder()
    decoder.feed(bytes(corrupt))
    assert decoder.counters.bad_version == 0
    assert decoder.counters.crc_errors == 1
    assert decoder.last_bad_version is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type_code": 256, "seq": 0},
        {"type_code": -1, "seq": 0},
        {"type_code": 1, "seq": 0x10000},
        {"type_code": 1, "seq": 0, "flags": 0x100},
        {"type_code": 1, "seq": 0, "payload": bytes(MAX_PAYLOAD + 1)},
        {"type_code": 1, "seq": True},
    ],
)
def test_frame_rejects_out_of_range_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        Frame(**kwargs)  # type: ignore[arg-type]


# The worked example of docs/protocol.md ("Serial bench link"): the same strings appear there.
EXAMPLE_FIELDS = "01 | 10 | 01 | 00 2A | 00 01 E2 40 01 01 | 13 25"
EXAMPLE_RAW = "01 10 01 00 2A 00 01 E2 40 01 01 13 25"
EXAMPLE_WIRE = "04 01 10 01 02 2A 08 01 E2 40 01 01 13 25 00"
ACK_RAW = "01 03 00 00 07 00 2A 87 F7"
ACK_WIRE = "03 01 03 01 02 07 04 2A 87 F7 00"


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


def test_worked_example_bytes() -> None:
    message = ButtonEdge(t_ms=123_456, button=Button.EVENT, pressed=True)
    frame = Frame(message.TYPE, 42, message.pack(), FrameFlag.ACK_REQUESTED)
    raw = bytes.fromhex(EXAMPLE_RAW)
    assert _hex(raw) == EXAMPLE_FIELDS.replace(" |", "")
    assert crc16(raw[:-2]) == 0x1325
    assert _hex(cobs_encode(raw)) + " 00" == EXAMPLE_WIRE
    assert _hex(encode_frame(frame)) == EXAMPLE_WIRE
    assert FrameDecoder().feed(bytes.fromhex(EXAMPLE_WIRE)) == [frame]
    ack = Ack(seq=42)
    assert _hex(encode_frame(Frame(ack.TYPE, 7, ack.pack()))) == ACK_WIRE
    assert _hex(cobs_decode(bytes.fromhex(ACK_WIRE)[:-1])) == ACK_RAW


def test_worked_example_matches_the_spec_text() -> None:
    candidates = [ROOT / "docs" / "protocol.md"]
    texts = [path.read_text(encoding="utf-8") for path in candidates if path.exists()]
    spec = next((text for text in texts if "## Serial bench link" in text), None)
    assert spec is not None, "the serial spec section is missing from docs/"
    literals = (EXAMPLE_FIELDS, EXAMPLE_RAW, EXAMPLE_WIRE, ACK_RAW, ACK_WIRE, "0x29B1", "0x1325")
    for literal in literals:
        assert literal in spec
