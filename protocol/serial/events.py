"""Events a ``SerialLink`` reports from ``receive_data``, ``handle_timeout`` and ``close``.

Small frozen classes, like h11's: the shell matches on them and never has to look inside the
link. Every reliable message sent is eventually either acknowledged (no event: silence is
success) or reported once in a ``DeliveryFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.serial._base import SerialMessage
from protocol.serial.control import Hello
from protocol.serial.frames import SERIAL_PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Connected:
    """Handshake complete, each side has the other's Hello: at start, after a loss or reboot.

    A rebooted MCU has lost its output state: ``Connected`` is the shell's cue to send it again.
    """

    peer: Hello


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message arrived (duplicates of reliable frames are never reported)."""

    message: SerialMessage
    seq: int


@dataclass(frozen=True, slots=True)
class PeerRebooted:
    """A Hello with a new boot id arrived: the peer restarted (or was replaced).

    Its sequence and dedup state are reset. If the link was connected it goes back to
    handshaking and reliable frames in flight fail with reason "peer rebooted" (the old boot may
    or may not have acted on them); ``Connected`` follows once the new boot confirms.
    """

    old_boot_id: int
    new_boot_id: int


@dataclass(frozen=True, slots=True)
class LinkLost:
    """No valid frame arrived for ``link_timeout_s``; the link is handshaking again."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """A reliable message was not acknowledged: retries exhausted, refused, link lost or closed."""

    message: SerialMessage
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    """The peer speaks another serial protocol version; no connection is made with it.

    Reported once per distinct peer version until a connection succeeds, not once per Hello.
    """

    peer_version: int
    local_version: int = SERIAL_PROTOCOL_VERSION

    @property
    def description(self) -> str:
        """A sentence for the user: which versions disagree and what to do."""
        return (
            f"wrong protocol version: the peer speaks serial bench-link protocol version "
            f"{self.peer_version}, this side speaks {self.local_version}; update the firmware "
            f"on one side"
        )


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A frame arrived intact but its message was refused (a Nak went back if it was reliable)."""

    type_code: int
    seq: int
    reason: str


LinkEvent = (
    Connected
    | MessageReceived
    | PeerRebooted
    | LinkLost
    | DeliveryFailed
    | VersionMismatch
    | MessageRejected
)
"""Everything a ``SerialLink`` can report."""
