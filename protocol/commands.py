"""Commands to a device (its ``cmd`` topic, or a group's) and the device's replies.

A command carries a correlation ``id`` chosen by the sender; the device answers every command it
can parse on its ``reply`` topic with the same ``id``: ``ok`` true with an optional ``result``, or
``ok`` false with an ``error`` (``code`` from ``ErrorCode`` and a human ``message``). A payload
that cannot be parsed gets a reply with code ``malformed`` and, when the ``id`` could be read, that
``id``; otherwise the reply's ``id`` is ``unknown``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocol.common import DeviceMessage, Message
from protocol.ids import SafeId
from protocol.vocabulary import Label, Mode, ShortText

ErrorCode = Literal[
    "malformed",  # the payload is not a valid command; the message says which field
    "unauthorized",  # the sender may not send this command
    "refused",  # the policy forbids it now (e.g. a remote stop of a locally started recording)
    "invalid_state",  # not possible in the device's current state
    "invalid_config",  # a set_config key or value is unknown or out of range
    "internal",  # the device failed; see its fault events
]

ConfigValue = str | int | float | bool
ConfigKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.]{0,127}\Z")]


class Command(Message, frozen=True, kw_only=True):
    """Common fields of every command: correlation ID and who sent it."""

    id: SafeId
    sender: SafeId


class Activate(Command, frozen=True, kw_only=True, tag="activate"):
    """Start recording (remote or dispatch activation)."""

    reason: Label | None = None


class Deactivate(Command, frozen=True, kw_only=True, tag="deactivate"):
    """Stop recording; policy requires a stated reason."""

    reason: Label


class SetMarker(Command, frozen=True, kw_only=True, tag="set_marker"):
    """Place a bookmark in the current recording."""

    note: Label | None = None


class SetMode(Command, frozen=True, kw_only=True, tag="set_mode"):
    """Switch a mode on or off."""

    mode: Mode
    enabled: bool


class SetConfig(Command, frozen=True, kw_only=True, tag="set_config"):
    """Change configuration values (keys as in the policy file, dotted)."""

    values: Annotated[dict[ConfigKey, ConfigValue], msgspec.Meta(min_length=1, max_length=64)]


class Ping(Command, frozen=True, kw_only=True, tag="ping"):
    """Ask for a reply; measures the command round trip."""


AnyCommand = Activate | Deactivate | SetMarker | SetMode | SetConfig | Ping


class CommandError(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Why a command failed."""

    code: ErrorCode
    message: ShortText


class Reply(DeviceMessage, frozen=True, kw_only=True, tag="reply"):
    """The device's answer to a command, matched by ``id``."""

    id: SafeId
    ok: bool
    result: dict[str, ConfigValue | None] | None = None
    error: CommandError | None = None

    def __post_init__(self) -> None:
        if self.ok and self.error is not None:
            raise ValueError("a reply with ok=true must not carry an error")
        if not self.ok and self.error is None:
            raise ValueError("a reply with ok=false must carry an error")
