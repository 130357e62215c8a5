"""Remote commands on a real camera: each command, each error code, and fuzzed payloads."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.camera import CameraState
from device.commands import CommandHandler
from protocol.commands import Reply
from protocol.messages import decode_message
from tests.camera_rig import BUTTON, Rig
from tests.fuzz import FUZZ_EXAMPLES


def command(kind: str, **fields: Any) -> bytes:
    body = {"v": 1, "type": kind, "ts": "2026-11-29T14:00:00Z", "id": "c-1", "sender": "dispatch"}
    return json.dumps(body | fields).encode()


def reply_of(handler: CommandHandler, payload: bytes, now: float) -> Reply:
    reply = decode_message(handler.handle(payload, now))
    assert isinstance(reply, Reply)
    return reply


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def handler_for(rig: Rig, authorized: frozenset[str] | None = None) -> CommandHandler:
    return CommandHandler(rig.camera, utc=rig.camera.clock.utc, authorized=authorized)


def test_activate_marker_and_deactivate_with_a_reason(rig: Rig) -> None:
    handler = handler_for(rig)
    rig.at(10.0)
    started = reply_of(handler, command("activate", reason="watch me"), 10.0)
    assert (started.id, started.ok) == ("c-1", True)
    assert rig.camera.state is CameraState.RECORDING
    trigger = rig.records("trigger")[-1]
    assert (trigger["trigger"], trigger["source"]) == ("remote", "mqtt:dispatch")
    marker = reply_of(handler, command("set_marker", note="suspect exits"), 12.0)
    assert marker.ok
    stop = reply_of(handler, command("deactivate", reason="call closed"), 20.0)
    assert stop.ok
    assert rig.camera.state is CameraState.BUFFERING
    assert rig.records("recording_stopped")[-1]["reason"] == "call closed"


def test_a_remote_stop_of_a_local_recording_is_refused(rig: Rig) -> None:
    rig.at(10.0).activate(BUTTON, 10.0)
    reply = reply_of(handler_for(rig), command("deactivate", reason="clear"), 20.0)
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.code == "refused"
    assert reply.error.message == (
        "a remote command may not stop a recording started on the camera"
    )


def test_commands_that_need_a_recording_or_a_camera_on(rig: Rig) -> None:
    handler = handler_for(rig)
    marker = reply_of(handler, command("set_marker"), 5.0)
    assert marker.error is not None
    assert marker.error.code == "invalid_state"
    rig.camera.sleep(6.0)
    asleep = reply_of(handler, command("activate"), 7.0)
    assert asleep.error is not None
    assert (asleep.error.code, asleep.error.message) == (
        "invalid_state",
        "sleep mode: triggers are ignored",
    )


def test_modes_ping_and_set_config(rig: Rig) -> None:
    handler = handler_for(rig)
    assert reply_of(handler, command("set_mode", mode="stealth", enabled=True), 5.0).ok
    assert rig.camera.indicator.stealth
    assert rig.records("mode")[-1]["source"] == "mqtt:dispatch"
    ping = reply_of(handler, command("ping"), 6.0)
    assert ping.result == {"state": "buffering"}
    config = reply_of(handler, command("set_config", values={"pre_event_s": 60}), 7.0)
    assert config.error is not None
    assert config.error.code == "invalid_config"


def test_unauthorized_senders_are_answered_and_ignored(rig: Rig) -> None:
    handler = handler_for(rig, authorized=frozenset({"supervisor"}))
    reply = reply_of(handler, command("activate"), 5.0)
    assert reply.error is not None
    assert reply.error.code == "unauthorized"
    assert rig.camera.state is CameraState.BUFFERING


@pytest.mark.parametrize(
    ("payload", "reply_id", "where"),
    [
        (b"\xff\xfe", "unknown", "not valid JSON"),
        (command("deactivate"), "c-1", "reason"),
        (command("self_destruct"), "c-1", "unknown message type"),
        (b'{"v":1,"type":"ping","id":"../etc"}', "unknown", ""),
    ],
)
def test_malformed_payloads_get_a_malformed_reply(
    rig: Rig, payload: bytes, reply_id: str, where: str
) -> None:
    reply = reply_of(handler_for(rig), payload, 5.0)
    assert (reply.id, reply.ok) == (reply_id, False)
    assert reply.error is not None
    assert reply.error.code == "malformed"
    assert where in reply.error.message


@functools.cache
def shared_handler() -> CommandHandler:
    """One camera for every fuzz example: garbage never changes its state."""
    return handler_for(Rig(Path(tempfile.mkdtemp(prefix="bwc-cmd-fuzz-"))))


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_payload_gets_exactly_one_valid_reply(payload: bytes) -> None:
    reply = reply_of(shared_handler(), payload, 1.0)
    assert not reply.ok


def test_telemetry_and_status_encode_and_describe_the_camera(rig: Rig) -> None:
    from device.telemetry import status, telemetry
    from protocol.messages import Status, Telemetry, UploadQueue, encode_message

    camera = rig.at(10.0)
    camera.activate(BUTTON, 10.0)
    camera.set_mode("mute", 11.0, enabled=True, source="button")
    message = telemetry(
        camera, 12.0, upload=UploadQueue(pending_segments=2, pending_bytes=10), segments=1
    )
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, Telemetry)
    assert (decoded.state, decoded.modes) == ("recording", ("mute",))
    assert decoded.recording == camera.recording.recording_id  # type: ignore[union-attr]
    assert decoded.upload.pending_segments == 2
    will = status(camera, 12.0, online=False, reason="connection_lost", boot_id="b-1")
    assert isinstance(decode_message(encode_message(will)), Status)
