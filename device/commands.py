"""Remote commands: decode, authorize, carry out on the camera, and reply. Sans-IO.

Every payload that reaches the device's ``cmd`` topic (or a group's) gets exactly one reply on the
device's ``reply`` topic, matched by the command's ``id``: a payload that does not decode gets a
``malformed`` reply (addressed to the ``id`` when it can be read), a sender that is not allowed an
``unauthorized`` one, and a command the camera or its policy turns down ``invalid_state`` or
``refused`` with the camera's own reason. Nothing a peer sends raises out of ``handle``: the
daemon must carry on whatever arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from device.camera import Camera, CameraState, Decision
from device.triggers import TriggerEvent
from protocol.commands import (
    Activate,
    AnyCommand,
    CommandError,
    ConfigValue,
    Deactivate,
    ErrorCode,
    Ping,
    Reply,
    SetConfig,
    SetMarker,
    SetMode,
)
from protocol.common import Trigger
from protocol.errors import DecodeError
from protocol.messages import correlation_id_of, decode_command, encode_message

UNKNOWN_ID: Final = "unknown"
_NOT_READY: Final = frozenset({CameraState.OFF, CameraState.SLEEPING})


class CommandHandler:
    """Turns command payloads into camera requests and replies.

    ``authorized`` is the set of sender IDs allowed to command this camera (None: anyone who can
    publish on its topic, which the broker's ACL should already restrict).
    """

    def __init__(
        self,
        camera: Camera,
        *,
        utc: Callable[[float], datetime],
        authorized: frozenset[str] | None = None,
    ) -> None:
        self.camera = camera
        self._utc = utc
        self.authorized = authorized
        self.handled = 0
        self.failed = 0

    def handle(self, payload: bytes, now: float) -> bytes:
        """The encoded reply to one command payload."""
        self.handled += 1
        try:
            command = decode_command(payload)
        except DecodeError as error:
            reply_id = correlation_id_of(payload) or UNKNOWN_ID
            return self._error(reply_id, "malformed", str(error), now)
        if self.authorized is not None and command.sender not in self.authorized:
            return self._error(
                command.id, "unauthorized", f"sender {command.sender!r} may not command", now
            )
        return self._carry_out(command, now)

    def _carry_out(self, command: AnyCommand, now: float) -> bytes:
        camera = self.camera
        source = f"mqtt:{command.sender}"
        ready = camera.state not in _NOT_READY
        match command:
            case Activate():
                event = TriggerEvent(kind="remote", source=source)
                return self._answer(command, camera.trigger(event, now), ready, now)
            case Deactivate(reason=reason):
                trigger = Trigger(kind="remote", source=source)
                decision = camera.deactivate(trigger, reason, now)
                return self._answer(command, decision, decision.reason != "not recording", now)
            case SetMarker(note=note):
                decision = camera.marker(source, note, now)
                return self._answer(command, decision, decision.reason != "not recording", now)
            case SetMode(mode=mode, enabled=enabled):
                decision = camera.set_mode(mode, now, enabled=enabled, source=source)
                return self._answer(command, decision, camera.state is not CameraState.OFF, now)
            case SetConfig():
                return self._error(
                    command.id,
                    "invalid_config",
                    "configuration is applied at dock sync from the policy file; "
                    "set_config is not supported over MQTT yet",
                    now,
                )
            case Ping():
                return self._ok(command.id, {"state": camera.state.value}, now)

    def _answer(self, command: AnyCommand, decision: Decision, ready: bool, now: float) -> bytes:
        if decision.accepted or decision.reason.startswith("already"):
            return self._ok(command.id, {"decision": decision.reason}, now)
        code: ErrorCode = "refused" if ready else "invalid_state"
        return self._error(command.id, code, decision.reason, now)

    def _ok(self, reply_id: str, result: dict[str, ConfigValue | None], now: float) -> bytes:
        reply = Reply(
            ts=self._utc(now), device=self.camera.device_id, id=reply_id, ok=True, result=result
        )
        return encode_message(reply)

    def _error(self, reply_id: str, code: ErrorCode, message: str, now: float) -> bytes:
        self.failed += 1
        reply = Reply(
            ts=self._utc(now),
            device=self.camera.device_id,
            id=reply_id,
            ok=False,
            error=CommandError(code=code, message=message[:1000]),
        )
        return encode_message(reply)
