"""JSON messages: round trips, strict decoding, and the one documented error type."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.commands import Activate, CommandError, Deactivate, Ping, Reply
from protocol.errors import DecodeError, LocalProtocolError
from protocol.messages import (
    AnyMessage,
    Status,
    correlation_id_of,
    decode_command,
    decode_for_channel,
    decode_message,
    encode_message,
)
from protocol.topics import DeviceChannel, GroupChannel
from tests.fuzz import FUZZ_EXAMPLES
from tests.strategies import any_message, commands, events, replies, statuses, telemetry

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
PING = {"v": 1, "type": "ping", "ts": "2026-11-29T14:00:00Z", "id": "c-1", "sender": "dispatch"}


def _bytes(document: object) -> bytes:
    return json.dumps(document).encode()


@given(any_message)
def test_every_message_round_trips(message: AnyMessage) -> None:
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("channel", "strategy"),
    [
        (DeviceChannel.STATUS, statuses),
        (DeviceChannel.TELEMETRY, telemetry),
        (DeviceChannel.EVENT, events),
        (DeviceChannel.COMMAND, commands),
        (DeviceChannel.REPLY, replies),
        (GroupChannel.COMMAND, commands),
    ],
)
def test_each_channel_accepts_its_family(
    channel: DeviceChannel | GroupChannel, strategy: st.SearchStrategy[AnyMessage]
) -> None:
    @given(strategy)
    @settings(max_examples=30)
    def check(message: AnyMessage) -> None:
        assert decode_for_channel(channel, encode_message(message)) == message

    check()


def test_a_channel_refuses_another_family() -> None:
    status = Status(
        ts=NOW, device="cam-1", online=True, reason="connected", boot_id="b", firmware="f"
    )
    with pytest.raises(DecodeError, match="unknown message type"):
        decode_for_channel(DeviceChannel.COMMAND, encode_message(status))


def test_upload_chunks_are_not_json() -> None:
    with pytest.raises(DecodeError, match="does not carry JSON"):
        decode_for_channel(DeviceChannel.UPLOAD_CHUNK, b"{}")


@pytest.mark.parametrize(
    ("change", "reason", "where"),
    [
        ({"type": "self_destruct"}, "unknown message type", "$.type"),
        ({"v": 2}, "unsupported schema version", "$.v"),
        ({"ts": "2026-11-29T14:00:00"}, "timezone", "$.ts"),
        ({"ts": "yesterday"}, "RFC3339", "$.ts"),
        ({"ts": 1764424800}, "Expected `datetime`", "$.ts"),
        ({"id": "a/b"}, "regex", "$.id"),
        ({"id": "+"}, "regex", "$.id"),
        ({"sender": 7}, "Expected `str`", "$.sender"),
        ({"extra": True}, "unknown field `extra`", "$"),
    ],
)
def test_malformed_commands_name_the_field(
    change: dict[str, object], reason: str, where: str
) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        decode_command(_bytes(PING | change))
    assert caught.value.where == where


def test_missing_field_is_named() -> None:
    document = {key: value for key, value in PING.items() if key != "sender"}
    with pytest.raises(DecodeError, match="missing required field `sender`"):
        decode_command(_bytes(document))


def test_deactivate_requires_a_reason() -> None:
    with pytest.raises(DecodeError, match="reason"):
        decode_command(_bytes(PING | {"type": "deactivate"}))
    parsed = decode_command(_bytes(PING | {"type": "deactivate", "reason": "scene secure"}))
    assert parsed == Deactivate(ts=NOW, id="c-1", sender="dispatch", reason="scene secure")


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit of 100 bytes"):
        decode_command(b" " * 101, max_bytes=100)


def test_invalid_utf8_and_truncated_json() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_command(b"\xff\xfe")
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode_command(_bytes(PING)[:-1])


def test_reply_ok_and_error_must_agree() -> None:
    document = {
        "v": 1,
        "type": "reply",
        "ts": "2026-11-29T14:00:00Z",
        "device": "cam-1",
        "id": "c-1",
        "ok": True,
        "error": {"code": "refused", "message": "no"},
    }
    with pytest.raises(DecodeError, match="must not carry an error"):
        decode_message(_bytes(document))
    with pytest.raises(DecodeError, match="must carry an error"):
        decode_message(_bytes(document | {"ok": False, "error": None}))


def test_we_refuse_to_send_an_invalid_message() -> None:
    with pytest.raises(LocalProtocolError, match="invalid Activate"):
        encode_message(Activate(ts=NOW, id="not a safe id", sender="dispatch"))
    with pytest.raises(ValueError, match="must carry an error"):
        Reply(ts=NOW, device="cam-1", id="c-1", ok=False)


def test_correlation_id_is_recovered_from_a_broken_command() -> None:
    assert correlation_id_of(_bytes({"id": "c-9", "type": "warp"})) == "c-9"
    assert correlation_id_of(b"garbage") is None
    assert correlation_id_of(_bytes({"id": "bad id"})) is None


def test_reply_error_shape() -> None:
    reply = Reply(
        ts=NOW,
        device="cam-1",
        id="c-1",
        ok=False,
        error=CommandError(code="malformed", message="missing reason"),
    )
    assert json.loads(encode_message(reply))["error"] == {
        "code": "malformed",
        "message": "missing reason",
    }


def test_ping_is_the_smallest_command() -> None:
    assert decode_command(_bytes(PING)) == Ping(ts=NOW, id="c-1", sender="dispatch")


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, object]:
    """Valid messages with one field replaced, removed or added."""
    document: dict[str, object] = json.loads(encode_message(draw(any_message)))
    key = draw(st.sampled_from(sorted(document)))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if action == "replace":
        document[key] = draw(json_values)
    elif action == "remove":
        del document[key]
    else:
        document[draw(st.text(max_size=10))] = draw(json_values)
    return document


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.one_of(json_values, near_valid_documents()))
def test_random_json_raises_only_decode_error(document: object) -> None:
    for decode in (decode_message, decode_command):
        with contextlib.suppress(DecodeError):
            decode(_bytes(document))
