"""Message payloads: round trips, precise decode errors, validation of every field's range."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, LocalProtocolError
from protocol.serial import (
    MAX_PAYLOAD,
    MESSAGE_CLASSES,
    Ack,
    Battery,
    Button,
    ButtonEdge,
    Capability,
    Direction,
    DisplayText,
    FieldError,
    GpsFix,
    GpsFixType,
    Haptic,
    Heartbeat,
    Hello,
    Holster,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    MessageType,
    Nak,
    NakReason,
    Role,
    SerialMessage,
    Taser,
    Tone,
    VehicleInput,
    VehicleInputKind,
    decode_message,
    encode_message,
    t_ms_delta,
)
from tests.fuzz import FUZZ_EXAMPLES
from tests.serial_support import STRATEGIES, messages


@given(messages)
def test_every_message_round_trips(message: SerialMessage) -> None:
    payload = encode_message(message)
    assert decode_message(message.TYPE, payload) == message


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.integers(0, 0xFF), st.binary(max_size=64))
def test_random_payloads_raise_only_decode_error(type_code: int, payload: bytes) -> None:
    try:
        message = decode_message(type_code, payload)
    except DecodeError:
        return
    assert encode_message(message) == payload


@settings(max_examples=FUZZ_EXAMPLES // 5)
@given(st.sampled_from([MessageType.IMU_BATCH, MessageType.HELLO]), st.binary(max_size=1100))
def test_random_long_payloads_raise_only_decode_error(type_code: int, payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(type_code, payload)


def test_type_codes_are_unique_and_mapped() -> None:
    assert len({cls.TYPE for cls in MESSAGE_CLASSES.values()}) == len(MessageType)
    for code, cls in MESSAGE_CLASSES.items():
        assert cls.TYPE is code


@pytest.mark.parametrize(
    "cls",
    [ButtonEdge, Holster, VehicleInput, Taser, Led, Haptic, Tone, DisplayText],
)
def test_state_changes_and_outputs_are_reliable(cls: type[SerialMessage]) -> None:
    assert cls.RELIABLE


@pytest.mark.parametrize("cls", [ImuBatch, GpsFix, Battery, Heartbeat, Hello, Ack, Nak])
def test_streams_and_link_control_are_best_effort(cls: type[SerialMessage]) -> None:
    assert not cls.RELIABLE


def test_directions() -> None:
    to_host = {ButtonEdge, Holster, VehicleInput, Taser, ImuBatch, GpsFix, Battery}
    to_mcu = {Led, Haptic, Tone, DisplayText}
    for cls in MESSAGE_CLASSES.values():
        expected = (
            Direction.TO_HOST
            if cls in to_host
            else Direction.TO_MCU
            if cls in to_mcu
            else Direction.BOTH
        )
        assert cls.DIRECTION is expected


@pytest.mark.parametrize(
    ("type_code", "payload", "where", "fragment"),
    [
        (0x7E, b"", "type", "unknown message type code 0x7E"),
        (
            MessageType.BUTTON_EDGE,
            b"\x00\x00\x00\x01\x01",
            "ButtonEdge length",
            "expected 6 bytes, got 5",
        ),
        (MessageType.BUTTON_EDGE, b"\x00\x00\x00\x01\x09\x01", "ButtonEdge.button", "EVENT=1"),
        (
            MessageType.BUTTON_EDGE,
            b"\x00\x00\x00\x01\x01\x02",
            "ButtonEdge.pressed",
            "expected 0 or 1, got 2",
        ),
        (MessageType.HOLSTER, b"\x00\x00\x00\x00\x07", "Holster.drawn", "got 7"),
        (
            MessageType.VEHICLE_INPUT,
            b"\x00\x00\x00\x00\x01\x00\x02",
            "VehicleInput.value",
            "0..1, got 2",
        ),
        (
            MessageType.VEHICLE_INPUT,
            b"\x00\x00\x00\x00\x00\x00\x02",
            "VehicleInput.input",
            "LIGHTBAR=1",
        ),
        (MessageType.TASER, b"\x00\x00\x00\x00\x05", "Taser.event", "got 5"),
        (MessageType.IMU_BATCH, b"\x00" * 6, "ImuBatch length", "expected 7..1015 bytes, got 6"),
        (
            MessageType.IMU_BATCH,
            b"\x00\x00\x00\x00\x00\x0a\x02" + bytes(12),
            "ImuBatch length",
            "for 2 samples",
        ),
        (
            MessageType.IMU_BATCH,
            b"\x00\x00\x00\x00\x00\x0a\x00",
            "ImuBatch.samples",
            "1..84 samples, got 0",
        ),
        (
            MessageType.IMU_BATCH,
            b"\x00\x00\x00\x00\x00\x00\x01" + bytes(12),
            "ImuBatch.period_ms",
            "1..65535",
        ),
        (MessageType.GPS_FIX, b"\x00" * 4 + b"\x01" + bytes(10), "GpsFix.fix", "NONE=0"),
        (
            MessageType.GPS_FIX,
            b"\x00" * 4 + b"\x03\x7f\xff\xff\xff" + bytes(6),
            "GpsFix.lat_e7",
            "-900000000..900000000",
        ),
        (
            MessageType.BATTERY,
            b"\x00" * 4 + b"\x65\x00\x00\x00",
            "Battery.percent",
            "0..100, got 101",
        ),
        (MessageType.LED, b"\x00\x00\x00\x00\x04", "Led.pattern", "BLINK_FAST=3, got 4"),
        (MessageType.TONE, b"\x00\x13\x00\x01\x01", "Tone.frequency_hz", "20..20000, got 19"),
        (MessageType.TONE, b"\x03\xe8\x00\x01\x00", "Tone.repeat", "1..255, got 0"),
        (
            MessageType.DISPLAY_TEXT,
            b"ok\xff",
            "DisplayText.text",
            "valid UTF-8, got byte 0xFF at offset 2",
        ),
        (MessageType.DISPLAY_TEXT, b"a\x00b", "DisplayText.text", "without NUL"),
        (MessageType.DISPLAY_TEXT, b"x" * 65, "DisplayText length", "0..64 bytes, got 65"),
        (MessageType.HELLO, b"\x01\x01" + bytes(11), "Hello length", "14..46 bytes, got 13"),
        (MessageType.HELLO, b"\x00\x01" + bytes(12), "Hello.protocol_version", "1..255, got 0"),
        (MessageType.HELLO, b"\x01\x01" + bytes(12), "Hello.boot_id", "got 0"),
        (MessageType.HELLO, b"\x01\x03" + bytes(12), "Hello.role", "HOST=1, MCU=2, got 3"),
        (MessageType.NAK, b"\x00\x01\x09", "Nak.reason", "BUSY=4, got 9"),
        (MessageType.ACK, b"\x00", "Ack length", "expected 2 bytes, got 1"),
    ],
)
def test_decode_errors_name_the_message_field_and_values(
    type_code: int, payload: bytes, where: str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_message(type_code, payload)
    assert caught.value.where == where
    assert fragment in str(caught.value)


def test_decode_error_chains_the_field_error() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_message(MessageType.BATTERY, b"\x00" * 4 + b"\xff\x00\x00\x00")
    assert isinstance(caught.value.__cause__, FieldError)
    assert str(caught.value).startswith("Battery payload: expected int 0..100, got 255")


def test_unknown_capability_bits_from_a_newer_peer_are_kept() -> None:
    payload = b"\x01\x02\x80\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00\x00fw"
    hello = decode_message(MessageType.HELLO, payload)
    assert isinstance(hello, Hello)
    assert int(hello.capabilities) == 0x8000_0001
    assert Capability.BUTTONS in hello.capabilities
    assert encode_message(hello) == payload


SAMPLE = ImuSample(0, 0, 1000, 0, 0, 0)


def wrong(value: object) -> Any:
    """A value of the wrong type, passed on purpose: the runtime check must catch it."""
    return value


# Each builder gets one out-of-range value; the field named must be the one reported.
BAD_VALUES: list[tuple[str, Any]] = [
    ("ButtonEdge.t_ms", lambda: ButtonEdge(-1, Button.EVENT, pressed=True)),
    ("ButtonEdge.t_ms", lambda: ButtonEdge(1 << 32, Button.EVENT, pressed=True)),
    ("ButtonEdge.button", lambda: ButtonEdge(0, wrong(1), pressed=True)),
    ("ButtonEdge.pressed", lambda: ButtonEdge(0, Button.EVENT, wrong(1))),
    ("Holster.drawn", lambda: Holster(0, wrong(None))),
    ("VehicleInput.value", lambda: VehicleInput(0, VehicleInputKind.SIREN, 2)),
    ("VehicleInput.value", lambda: VehicleInput(0, VehicleInputKind.SPEED, 65_536)),
    ("VehicleInput.value", lambda: VehicleInput(0, VehicleInputKind.SPEED, -1)),
    ("VehicleInput.input", lambda: VehicleInput(0, wrong("SPEED"), 1)),
    ("Taser.event", lambda: Taser(0, wrong(3))),
    ("ImuSample.ax", lambda: ImuSample(32_768, 0, 0, 0, 0, 0)),
    ("ImuSample.gz", lambda: ImuSample(0, 0, 0, 0, 0, -32_769)),
    ("ImuBatch.period_ms", lambda: ImuBatch(0, 0, (SAMPLE,))),
    ("ImuBatch.samples", lambda: ImuBatch(0, 10, ())),
    ("ImuBatch.samples", lambda: ImuBatch(0, 10, (SAMPLE,) * 85)),
    ("ImuBatch.samples", lambda: ImuBatch(0, 10, wrong([SAMPLE]))),
    ("GpsFix.lat_e7", lambda: GpsFix(0, GpsFixType.FIX_3D, 900_000_001, 0, 5)),
    ("GpsFix.lon_e7", lambda: GpsFix(0, GpsFixType.FIX_3D, 0, -1_800_000_001, 5)),
    ("GpsFix.accuracy_m", lambda: GpsFix(0, GpsFixType.FIX_3D, 0, 0, 70_000)),
    ("GpsFix.fix", lambda: GpsFix(0, wrong(1), 0, 0, 5)),
    ("Battery.percent", lambda: Battery(0, 101, 3700, charging=False)),
    ("Battery.millivolts", lambda: Battery(0, 50, -1, charging=False)),
    ("Battery.charging", lambda: Battery(0, 50, 3700, wrong("yes"))),
    ("Led.r", lambda: Led(0, 256, 0, 0, LedPattern.SOLID)),
    ("Led.led", lambda: Led(-1, 0, 0, 0, LedPattern.SOLID)),
    ("Led.pattern", lambda: Led(0, 0, 0, 0, wrong(1))),
    ("Haptic.pattern", lambda: Haptic(256, 100)),
    ("Haptic.duration_ms", lambda: Haptic(1, 65_536)),
    ("Tone.frequency_hz", lambda: Tone(19, 100)),
    ("Tone.frequency_hz", lambda: Tone(20_001, 100)),
    ("Tone.duration_ms", lambda: Tone(440, 0)),
    ("Tone.repeat", lambda: Tone(440, 100, 0)),
    ("DisplayText.text", lambda: DisplayText("x" * 65)),
    ("DisplayText.text", lambda: DisplayText("é" * 33)),
    ("DisplayText.text", lambda: DisplayText("a\x00b")),
    ("DisplayText.text", lambda: DisplayText("\ud800")),
    ("DisplayText.text", lambda: DisplayText(wrong(b"bytes"))),
    ("Hello.protocol_version", lambda: Hello(0, Role.HOST, Capability(0), 1)),
    ("Hello.protocol_version", lambda: Hello(256, Role.HOST, Capability(0), 1)),
    ("Hello.role", lambda: Hello(1, wrong(1), Capability(0), 1)),
    ("Hello.capabilities", lambda: Hello(1, Role.HOST, wrong(3), 1)),
    ("Hello.boot_id", lambda: Hello(1, Role.HOST, Capability(0), 0)),
    ("Hello.boot_id", lambda: Hello(1, Role.HOST, Capability(0), 1 << 32)),
    ("Hello.peer_boot_id", lambda: Hello(1, Role.HOST, Capability(0), 1, "", -1)),
    ("Hello.firmware", lambda: Hello(1, Role.HOST, Capability(0), 1, "v" * 33)),
    ("Heartbeat.uptime_ms", lambda: Heartbeat(1 << 32)),
    ("Heartbeat.uptime_ms", lambda: Heartbeat(wrong(1.5))),
    ("Ack.seq", lambda: Ack(0x10000)),
    ("Nak.seq", lambda: Nak(-1, NakReason.CRC)),
    ("Nak.reason", lambda: Nak(1, wrong(2))),
]


@pytest.mark.parametrize(("field", "build"), BAD_VALUES, ids=[f for f, _ in BAD_VALUES])
def test_out_of_range_values_raise_local_protocol_error(field: str, build: Any) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        build()
    assert isinstance(caught.value, FieldError)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "message",
    [
        ButtonEdge(0xFFFF_FFFF, Button.VOLUME_DOWN, pressed=False),
        VehicleInput(0, VehicleInputKind.SPEED, 0xFFFF),
        ImuBatch(0, 0xFFFF, (ImuSample(-32_768, 32_767, 0, 0, 0, 0),) * 84),
        GpsFix(1, GpsFixType.NONE, -900_000_000, 1_800_000_000, 0xFFFF),
        Battery(0, 100, 0xFFFF, charging=True),
        Tone(20_000, 0xFFFF, 255),
        DisplayText("é" * 32),
        DisplayText(""),
        Hello(255, Role.MCU, Capability(0xFFFF_FFFF), 0xFFFF_FFFF, "f" * 32, 0xFFFF_FFFF),
    ],
)
def test_boundary_values_are_accepted_and_round_trip(message: SerialMessage) -> None:
    payload = encode_message(message)
    assert len(payload) <= MAX_PAYLOAD
    assert decode_message(message.TYPE, payload) == message


def test_largest_imu_batch_fits_one_frame() -> None:
    payload = encode_message(ImuBatch(0, 10, (SAMPLE,) * 84))
    assert len(payload) == 7 + 84 * 12 <= MAX_PAYLOAD


def test_messages_are_frozen_and_slotted() -> None:
    message = Holster(5, drawn=True)
    with pytest.raises(AttributeError):
        message.drawn = False  # type: ignore[misc]
    assert not hasattr(message, "__dict__")


@pytest.mark.parametrize(
    ("later", "earlier", "delta"),
    [
        (1500, 1000, 500),
        (1000, 1500, -500),
        (5, 0xFFFF_FFFB, 10),
        (0xFFFF_FFFB, 5, -10),
        (0x7FFF_FFFF, 0, 0x7FFF_FFFF),
        (0x8000_0000, 0, -0x8000_0000),
    ],
)
def test_t_ms_delta_handles_wrap_around(later: int, earlier: int, delta: int) -> None:
    assert t_ms_delta(later, earlier) == delta


@given(st.integers(0, 0xFFFF_FFFF), st.integers(-(2**31), 2**31 - 1))
def test_t_ms_delta_inverts_modular_addition(start: int, delta: int) -> None:
    assert t_ms_delta((start + delta) % 2**32, start) == delta


def test_there_is_a_strategy_for_every_message_type() -> None:
    assert set(STRATEGIES) == set(MESSAGE_CLASSES.values())


@given(messages)
def test_strategies_only_build_valid_messages(message: SerialMessage) -> None:
    assert len(message.pack()) <= MAX_PAYLOAD
