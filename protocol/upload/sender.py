"""The device side of the resumable upload, as a pure state machine (sans-IO).

``UploadSender`` never touches the segment's bytes, a socket or a clock: the shell calls
``start``, ``receive_ack`` and ``handle_timeout`` with the current time, executes the returned
actions (publish the offer; read ``length`` bytes at ``offset`` and publish ``encode_chunk``), and
arms one timer for ``next_deadline()`` (after aioquic's ``get_timer``/``handle_timer``).

Flow control and loss recovery come from the receiver's acks only, never from MQTT PUBACKs (a
broker's PUBACK is not delivery): at most ``window`` chunks go beyond the last acknowledged
``committed`` offset. After ``ack_timeout_s`` without progress everything from ``committed`` is
sent again (go-back-N); after a second timeout in a row the sender re-offers to learn the
authoritative committed offset. The timeout after ``max_retries`` consecutive timeouts without
progress ends the attempt as ``FAILED``; the device's queue retries later with a fresh sender.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from protocol.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from protocol.manifest import SignedManifest
from protocol.upload.chunk import CHUNK_HEADER_SIZE, MAX_CHUNK_DATA
from protocol.upload.wire import (
    CODE_NO_ANSWER,
    MAX_WINDOW,
    Ack,
    Offer,
    encode_control,
    make_offer,
)

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
"""1 MiB, the receiver's default ``max_chunk_size``: per-message costs dominate in small chunks.
The shell caps it by the broker's message limit (docs/protocol.md, "Message size"), so it
becomes ~128 KB on a broker that announces no limit or on AWS IoT Core."""


class SenderState(enum.Enum):
    """Where an upload attempt stands, from the device's side."""

    IDLE = "idle"  # built, start() not called yet
    OFFERING = "offering"  # offer sent, waiting for the receiver's committed offset
    SENDING = "sending"  # chunks in flight, more to send when the window opens
    AWAITING_VERIFY = "awaiting_verify"  # every byte sent at least once, no verified ack yet
    VERIFIED = "verified"  # terminal: the device may delete its copy
    REJECTED = "rejected"  # terminal, permanent: never offer this again
    FAILED = "failed"  # terminal, transient: retry later with a new sender


class SenderInput(enum.Enum):
    """The three entry points, for the table of what each state allows."""

    START = "start"
    ACK = "ack"
    TIMEOUT = "timeout"


_LIVE: Final = frozenset({SenderState.OFFERING, SenderState.SENDING, SenderState.AWAITING_VERIFY})
_DONE: Final = frozenset({SenderState.VERIFIED, SenderState.REJECTED, SenderState.FAILED})

SENDER_TRANSITIONS: Final[dict[tuple[SenderState, SenderInput], frozenset[SenderState]]] = {
    (SenderState.IDLE, SenderInput.START): frozenset({SenderState.OFFERING}),
    (SenderState.IDLE, SenderInput.TIMEOUT): frozenset({SenderState.IDLE}),
    **{(s, SenderInput.ACK): frozenset({s, *_LIVE, *_DONE}) for s in _LIVE},
    (SenderState.OFFERING, SenderInput.TIMEOUT): frozenset(
        {SenderState.OFFERING, SenderState.FAILED}
    ),
    **{
        (s, SenderInput.TIMEOUT): frozenset({*_LIVE, SenderState.FAILED})
        for s in _LIVE - {SenderState.OFFERING}
    },
    # Finished senders ignore late acks and timers: both are normal after the end.
    **{(s, i): frozenset({s}) for s in _DONE for i in (SenderInput.ACK, SenderInput.TIMEOUT)},
}
"""Allowed ``(state, input) -> possible next states``. A pair not listed raises
``LocalProtocolError`` (``start`` twice; ``receive_ack`` before ``start``)."""


class UploadResult(enum.Enum):
    """How an upload attempt ended."""

    VERIFIED = "verified"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendOffer:
    """Publish ``payload`` (the encoded ``offer``) on the device's ``upload/offer`` topic."""

    offer: Offer
    payload: bytes


@dataclass(frozen=True, slots=True)
class SendChunk:
    """Read ``length`` bytes of the segment at ``offset`` and publish ``encode_chunk`` of them."""

    upload_id: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The attempt is over. Only ``UploadResult.VERIFIED`` allows deleting the segment.

    ``code``/``message`` come from the receiver's ack, or are ``CODE_NO_ANSWER`` after timeouts.
    """

    result: UploadResult
    code: str | None = None
    message: str | None = None


SenderAction: TypeAlias = SendOffer | SendChunk | Finished


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """Static upload settings, validated once. Times in seconds, sizes in bytes."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    window: int = 16
    ack_timeout_s: float = 10.0
    max_retries: int = 5
    min_chunk_size: int = 1024
    """Refuse to run when the broker's packet limit leaves less data per chunk than this."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_chunk_size <= self.chunk_size <= MAX_CHUNK_DATA:
            raise LocalProtocolError(
                f"need 1 <= min_chunk_size ({self.min_chunk_size}) <= chunk_size "
                f"({self.chunk_size}) <= {MAX_CHUNK_DATA}"
            )
        if not 1 <= self.window <= MAX_WINDOW:
            raise LocalProtocolError(f"window must be 1 to {MAX_WINDOW}, got {self.window}")
        if not self.ack_timeout_s > 0:
            raise LocalProtocolError(f"ack_timeout_s must be > 0, got {self.ack_timeout_s}")
        if self.max_retries < 0:
            raise LocalProtocolError(f"max_retries must be >= 0, got {self.max_retries}")


def effective_chunk_size(config: SenderConfig, max_message_size: int) -> int:
    """Data bytes per chunk so that no chunk message exceeds ``max_message_size``.

    ``max_message_size`` is what one MQTT payload may carry: the shell derives it from the broker's
    maximum packet size minus the topic and property overhead (see the spec). Raises
    ``LocalProtocolError`` if that leaves less than ``config.min_chunk_size``.
    """
    size = min(config.chunk_size, max_message_size - CHUNK_HEADER_SIZE)
    if size < config.min_chunk_size:
        raise LocalProtocolError(
            f"max_message_size {max_message_size} leaves {size} data bytes per chunk, "
            f"below min_chunk_size {config.min_chunk_size}"
        )
    return size


class UploadSender:
    """One attempt to upload one segment. Build a new one to retry after ``FAILED``.

    The segment's size and SHA-256 come from the signed manifest; ``max_message_size`` bounds
    every message this sender asks to publish (offer and chunks).
    """

    def __init__(
        self,
        signed_manifest: SignedManifest,
        *,
        max_message_size: int,
        config: SenderConfig | None = None,
    ) -> None:
        self._config = config or SenderConfig()
        try:
            manifest = signed_manifest.decode()
        except DecodeError as exc:
            raise LocalProtocolError(f"cannot upload an invalid manifest: {exc}") from exc
        self._size = manifest.size
        self._sha256 = manifest.sha256
        self._chunk_size = effective_chunk_size(self._config, max_message_size)
        self._offer = make_offer(
            signed_manifest, chunk_size=self._chunk_size, window=self._config.window
        )
        self._offer_payload = encode_control(self._offer)
        if len(self._offer_payload) > max_message_size:
            raise LocalProtocolError(
                f"the offer is {len(self._offer_payload)} bytes, above max_message_size "
                f"{max_message_size}"
            )
        self._state = SenderState.IDLE
        self._input = SenderInput.START
        self._committed = 0
        self._next_offset = 0
        self._retries = 0
        self._deadline: float | None = None
        self._outcome: Finished | None = None

    # -- read-only view ------------------------------------------------------------------------

    @property
    def state(self) -> SenderState:
        """The current state."""
        return self._state

    @property
    def upload_id(self) -> str:
        """The upload ID (from the signed manifest)."""
        return self._offer.upload_id

    @property
    def size(self) -> int:
        """Segment size in bytes, from the manifest."""
        return self._size

    @property
    def chunk_size(self) -> int:
        """Data bytes per chunk actually used (see ``effective_chunk_size``)."""
        return self._chunk_size

    @property
    def committed(self) -> int:
        """Bytes the receiver last reported durably committed (a contiguous prefix)."""
        return self._committed

    @property
    def next_offset(self) -> int:
        """Offset of the next chunk to send; bytes below it have been sent at least once."""
        return self._next_offset

    @property
    def outcome(self) -> Finished | None:
        """How the attempt ended, or ``None`` while it runs."""
        return self._outcome

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called next, or ``None`` for no timer."""
        return self._deadline

    # -- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> list[SenderAction]:
        """Send the offer. Allowed once, in ``IDLE``."""
        self._require(SenderInput.START)
        return self._send_offer(now)

    def receive_ack(self, ack: Ack, now: float) -> list[SenderAction]:
        """Handle a decoded ack. Stale, duplicate and foreign acks are ignored (return ``[]``).

        Raises ``RemoteProtocolError`` for an impossible ack (``committed`` beyond the size, or a
        ``verified`` ack whose size or SHA-256 do not match the manifest); state is unchanged.
        """
        self._require(SenderInput.ACK)
        if self._state in _DONE or ack.upload_id != self.upload_id:
            return []
        self._check_ack(ack)
        if ack.state == "receiving":
            return self._on_receiving(ack, now)
        if ack.state == "unknown":
            return self._on_unknown(now)
        result = {
            "verified": UploadResult.VERIFIED,
            "rejected": UploadResult.REJECTED,
            "failed": UploadResult.FAILED,
        }[ack.state]
        if result is UploadResult.VERIFIED:
            self._committed = self._next_offset = self._size
        return self._finish(Finished(result, ack.code, ack.message))

    def handle_timeout(self, now: float) -> list[SenderAction]:
        """Call at or after ``next_deadline()``; early or extra calls do nothing."""
        self._require(SenderInput.TIMEOUT)
        if self._deadline is None or now < self._deadline:
            return []
        if self._retries >= self._config.max_retries:
            text = (
                f"no progress after {self._retries + 1} timeouts of {self._config.ack_timeout_s} s"
            )
            return self._finish(Finished(UploadResult.FAILED, CODE_NO_ANSWER, text))
        self._retries += 1
        # The first silence resends from committed (go-back-N): plain loss is the usual cause.
        # A second silence in a row asks with an offer instead, whose answer is authoritative:
        # the receiver may have gone back (lost data, or a hash mismatch whose ack was lost),
        # which no chunk ack can tell apart from a stale one. An offer is also the only way to
        # ask for a verdict when every byte is committed.
        if (
            self._state is SenderState.OFFERING
            or self._retries > 1
            or self._committed >= self._size
        ):
            return self._send_offer(now)
        self._next_offset = self._committed
        self._deadline = now + self._config.ack_timeout_s
        return self._fill_window()

    # -- internals -----------------------------------------------------------------------------

    def _require(self, what: SenderInput) -> None:
        if (self._state, what) not in SENDER_TRANSITIONS:
            raise LocalProtocolError(f"{what.value} is not allowed in state {self._state.name}")
        self._input = what

    def _goto(self, state: SenderState) -> None:
        if state not in SENDER_TRANSITIONS[self._state, self._input]:
            raise LocalProtocolError(
                f"internal error: {self._state.name} -> {state.name} on {self._input.value}"
            )
        self._state = state

    def _check_ack(self, ack: Ack) -> None:
        if ack.committed > self._size:
            raise RemoteProtocolError(
                f"ack reports {ack.committed} bytes committed of a {self._size}-byte segment"
            )
        if ack.state == "verified" and (ack.committed != self._size or ack.sha256 != self._sha256):
            raise RemoteProtocolError(
                f"verified ack ({ack.committed} bytes, sha256 {ack.sha256}) does not match the "
                f"manifest ({self._size} bytes, sha256 {self._sha256})"
            )

    def _on_receiving(self, ack: Ack, now: float) -> list[SenderAction]:
        advanced = ack.committed > self._committed
        if self._state is SenderState.OFFERING:
            # Only the answer to an offer is authoritative (it may be lower than before, after
            # the receiver lost data); a chunk ack seen now predates the offer.
            if ack.in_reply_to != "offer":
                return []
            self._committed = self._next_offset = ack.committed
        elif advanced:
            # Acks are cumulative and may arrive reordered: only ever move forward.
            self._committed = ack.committed
            self._next_offset = max(self._next_offset, ack.committed)
        else:
            return []
        # Only bytes moving forward count as progress: a receiver that answers offers but never
        # sees a chunk (say, chunks above the broker's packet limit) must still end in FAILED.
        if advanced:
            self._retries = 0
        self._deadline = now + self._config.ack_timeout_s
        return self._fill_window()

    def _on_unknown(self, now: float) -> list[SenderAction]:
        if self._state is SenderState.OFFERING:
            return []  # the offer in flight will be answered; its timer covers its loss
        self._committed = self._next_offset = 0
        return self._send_offer(now)

    def _send_offer(self, now: float) -> list[SenderAction]:
        self._goto(SenderState.OFFERING)
        self._deadline = now + self._config.ack_timeout_s
        return [SendOffer(self._offer, self._offer_payload)]

    def _fill_window(self) -> list[SenderAction]:
        limit = self._committed + self._config.window * self._chunk_size
        actions: list[SenderAction] = []
        while self._next_offset < self._size:
            length = min(self._chunk_size, self._size - self._next_offset)
            if self._next_offset + length > limit:
                break
            actions.append(SendChunk(self.upload_id, self._next_offset, length))
            self._next_offset += length
        done = self._next_offset >= self._size
        self._goto(SenderState.AWAITING_VERIFY if done else SenderState.SENDING)
        return actions

    def _finish(self, outcome: Finished) -> list[SenderAction]:
        self._goto(SenderState[outcome.result.name])
        self._outcome = outcome
        self._deadline = None
        return [outcome]
