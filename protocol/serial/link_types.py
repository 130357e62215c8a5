"""States, transition table, configuration and counters of ``SerialLink``.

The table is the whole state machine: a ``(state, input)`` pair that is not in it is a call the
protocol does not allow, and ``SerialLink`` raises ``LocalProtocolError`` for it. Inputs are the
public calls plus three things that happen inside ``receive_data`` and ``handle_timeout``: the
peer's confirming Hello arriving, a Hello from a new boot of the peer, and the link timeout.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from protocol.errors import LocalProtocolError


class LinkState(enum.Enum):
    """Where a link endpoint is in its life."""

    DISCONNECTED = "disconnected"
    """Created, ``connect`` not called yet: it sends and accepts nothing."""
    HANDSHAKING = "handshaking"
    """Sending Hello every ``hello_interval_s`` until a Hello naming our boot arrives."""
    CONNECTED = "connected"
    """Each side has the other's Hello: messages flow, heartbeats run, link timeout armed."""
    CLOSED = "closed"
    """``close`` was called: final."""


class LinkInput(enum.Enum):
    """What can happen to a link: the public calls, then the three internal events."""

    CONNECT = "connect"
    RECEIVE_DATA = "receive_data"
    SEND = "send"
    HANDLE_TIMEOUT = "handle_timeout"
    CLOSE = "close"
    PEER_HELLO = "peer hello"
    """A Hello naming our boot arrived: the peer and we have each other's Hello."""
    PEER_REBOOTED = "peer rebooted"
    """A Hello with a new boot id arrived from the peer while connected."""
    LINK_TIMEOUT = "link timeout"
    """No valid frame arrived for ``link_timeout_s`` while connected."""


_S = LinkState
_I = LinkInput

TRANSITIONS: Final[Mapping[tuple[LinkState, LinkInput], LinkState]] = MappingProxyType(
    {
        (_S.DISCONNECTED, _I.CONNECT): _S.HANDSHAKING,
        (_S.DISCONNECTED, _I.CLOSE): _S.CLOSED,
        (_S.HANDSHAKING, _I.RECEIVE_DATA): _S.HANDSHAKING,
        (_S.HANDSHAKING, _I.HANDLE_TIMEOUT): _S.HANDSHAKING,
        (_S.HANDSHAKING, _I.PEER_HELLO): _S.CONNECTED,
        (_S.HANDSHAKING, _I.CLOSE): _S.CLOSED,
        (_S.CONNECTED, _I.RECEIVE_DATA): _S.CONNECTED,
        (_S.CONNECTED, _I.SEND): _S.CONNECTED,
        (_S.CONNECTED, _I.HANDLE_TIMEOUT): _S.CONNECTED,
        (_S.CONNECTED, _I.PEER_REBOOTED): _S.HANDSHAKING,
        (_S.CONNECTED, _I.LINK_TIMEOUT): _S.HANDSHAKING,
        (_S.CONNECTED, _I.CLOSE): _S.CLOSED,
        # close() is idempotent so a shell can call it from a finally block without checking.
        (_S.CLOSED, _I.CLOSE): _S.CLOSED,
    }
)
"""Every allowed ``(state, input)`` pair and the state it leads to."""


def next_state(state: LinkState, event: LinkInput) -> LinkState:
    """Return the state after ``event`` in ``state``, or raise ``LocalProtocolError``."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(
            f"{event.value} is not allowed while the serial link is {state.value}"
        ) from None


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Timing and limits of a link endpoint; validated once, when made."""

    heartbeat_interval_s: float = 1.0
    link_timeout_s: float = 3.0
    """No valid frame for this long while connected means the link is lost."""
    ack_timeout_s: float = 0.25
    max_retries: int = 5
    """Retransmissions of a reliable frame after the first transmission."""
    hello_interval_s: float = 0.5
    dedup_window_s: float = 5.0
    """How long a received reliable seq is remembered to suppress its retransmissions."""
    dedup_capacity: int = 1024
    """Most seqs remembered at once, whatever the window (bounds memory against a flood)."""
    max_in_flight: int = 64
    """Most reliable frames awaiting an ack; ``send`` refuses more."""

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval_s",
            "link_timeout_s",
            "ack_timeout_s",
            "hello_interval_s",
            "dedup_window_s",
        ):
            _check_seconds(self, name)
        _check_count(self, "max_retries", 0)
        _check_count(self, "dedup_capacity", 1)
        _check_count(self, "max_in_flight", 1)
        self._check_relations()

    def _check_relations(self) -> None:
        if self.link_timeout_s <= self.heartbeat_interval_s:
            raise LocalProtocolError(
                "LinkConfig: link_timeout_s must exceed heartbeat_interval_s, or a quiet but "
                "healthy peer would be declared lost"
            )
        # A retransmission must still fall inside the window, or it would be delivered twice.
        if self.dedup_window_s <= self.ack_timeout_s * (self.max_retries + 1):
            raise LocalProtocolError(
                "LinkConfig: dedup_window_s must exceed ack_timeout_s * (max_retries + 1)"
            )
        if self.max_in_flight > 0x8000:
            raise LocalProtocolError("LinkConfig: max_in_flight must be at most 32768 (seq space)")


def _check_seconds(config: LinkConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocalProtocolError(f"LinkConfig.{name}: expected seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise LocalProtocolError(f"LinkConfig.{name}: expected a finite value > 0, got {value!r}")


def _check_count(config: LinkConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LocalProtocolError(f"LinkConfig.{name}: expected an int >= {low}, got {value!r}")


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """A snapshot of what a link endpoint has seen and done."""

    frames_sent: int
    """Frames written, retransmissions included."""
    frames_received: int
    """Frames with a valid CRC and version."""
    crc_errors: int
    cobs_errors: int
    bytes_dropped: int
    """Bytes of garbage and of discarded frames."""
    resyncs: int
    """Discarded runs of bytes (any reason), each a resynchronisation at the next 0x00."""
    retries: int
    duplicates: int
    """Reliable frames received again and suppressed (acknowledged, not delivered)."""
    naks: int
    """Naks received."""
    naks_sent: int
    bad_version: int
    """Frames or Hellos of another protocol version."""
    rejected: int
    """Valid frames whose message was refused: unknown type, bad payload, wrong direction."""
    ignored: int
    """Valid non-Hello frames received before the handshake completed."""
    delivery_failures: int


@dataclass(slots=True)
class LinkStats:
    """The link's own running counts (the decoder keeps the byte-level ones)."""

    frames_sent: int = 0
    frames_received: int = 0
    retries: int = 0
    duplicates: int = 0
    naks: int = 0
    naks_sent: int = 0
    hello_version_errors: int = 0
    rejected: int = 0
    ignored: int = 0
    delivery_failures: int = 0
