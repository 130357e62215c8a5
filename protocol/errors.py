"""The error hierarchy shared by every bwc-sim package.

``BwcError`` is the root; each package adds its own branch under it. In the protocol branch,
errors are split by who broke the protocol (after h11): ``LocalProtocolError`` means our side
asked for something the protocol forbids, ``RemoteProtocolError`` means the peer sent something
invalid. ``DecodeError`` is the one documented error for bytes or JSON that do not decode into a
valid message.
"""

from __future__ import annotations


class BwcError(Exception):
    """Root of every error bwc-sim raises on purpose."""


class ProtocolError(BwcError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """Our side tried to do something the protocol does not allow in its current state."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class DecodeError(RemoteProtocolError):
    """Input could not be decoded into a valid message.

    ``where`` names the field (a JSON path such as ``$.battery.percent``) or the byte offset the
    problem was found at, when known; the message says what was expected and what was found.
    """

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{reason} (at {where})" if where else reason)
