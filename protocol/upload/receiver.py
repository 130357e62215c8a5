"""The evidence receiver's side of the resumable upload, as a pure state machine (sans-IO).

One ``UploadReceiver`` per upload. The shell (the evidence receiver service) decodes each
message, checks trust for offers (device known, signature valid), routes by ``upload_id`` and
executes the returned actions in order:

* ``WriteData(offset, data)``: write at ``offset`` and make it durable (fsync) before sending any
  ``SendAck`` that follows in the same list: an ack promises that ``committed`` bytes survive a
  crash. Writes are always appends to the committed prefix.
* ``Complete(sha256)``: the whole segment arrived and matched its manifest: make the file final
  (fsync, atomic rename) before sending the verified ack that follows.
* ``Discard()``: the finished file did not match its SHA-256: truncate it to zero.
* ``SendAck(ack)``: publish ``encode_control(ack)`` on the device's ``upload/ack`` topic.

The machine never reads files: a restarted receiver is rebuilt from the durable prefix length and
a SHA-256 object already fed with those bytes, so hashing stays incremental.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import replace
from typing import Final

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.upload.chunk import Chunk, ChunkCrcError
from protocol.upload.reassembly import Placement, Reassembly
from protocol.upload.receiver_types import (
    Complete,
    Discard,
    Hasher,
    ReceiverAction,
    ReceiverConfig,
    ReceiverStats,
    SendAck,
    WriteData,
    check_offer,
)
from protocol.upload.wire import CODE_HASH_MISMATCH, Ack, InReplyTo, Offer, failed_ack


class ReceiverState(enum.Enum):
    """Where one upload stands at the receiver."""

    RECEIVING = "receiving"  # accepting chunks; the idle timer runs
    DORMANT = "dormant"  # idle too long: buffer dropped, may be evicted; any input wakes it
    VERIFIED = "verified"  # terminal: stored and verified; every input gets the verified ack


class ReceiverInput(enum.Enum):
    """The entry points, for the table of what each state allows."""

    OFFER = "offer"
    CHUNK = "chunk"
    CORRUPT_CHUNK = "corrupt_chunk"
    TIMEOUT = "timeout"


_R, _D, _V = ReceiverState.RECEIVING, ReceiverState.DORMANT, ReceiverState.VERIFIED
RECEIVER_TRANSITIONS: Final[dict[tuple[ReceiverState, ReceiverInput], frozenset[ReceiverState]]] = {
    (_R, ReceiverInput.OFFER): frozenset({_R, _V}),
    (_R, ReceiverInput.CHUNK): frozenset({_R, _V}),
    (_R, ReceiverInput.CORRUPT_CHUNK): frozenset({_R}),
    (_R, ReceiverInput.TIMEOUT): frozenset({_R, _D}),
    # A rejected re-offer or an invalid chunk leaves a dormant upload dormant.
    (_D, ReceiverInput.OFFER): frozenset({_D, _R, _V}),
    (_D, ReceiverInput.CHUNK): frozenset({_D, _R, _V}),
    (_D, ReceiverInput.CORRUPT_CHUNK): frozenset({_D}),
    (_D, ReceiverInput.TIMEOUT): frozenset({_D}),
    **{(_V, i): frozenset({_V}) for i in ReceiverInput},
}
"""Every input is allowed in every state (a lossy link makes any of them normal anywhere); the
table bounds where each may lead. Input for another upload raises ``LocalProtocolError``."""


class UploadReceiver:
    """The receiving end of one upload, built by the shell from an accepted offer.

    Build it only after the shell's trust checks and ``check_offer`` passed (an offer that fails
    ``check_offer`` raises ``LocalProtocolError`` here), then feed that same offer to
    ``receive_offer``. To resume after a restart pass the durable ``committed`` length with a
    ``hasher`` fed those bytes; ``verified=True`` restores an upload already made final.
    """

    def __init__(
        self,
        offer: Offer,
        config: ReceiverConfig | None = None,
        *,
        committed: int = 0,
        hasher: Hasher | None = None,
        verified: bool = False,
    ) -> None:
        self._config = config or ReceiverConfig()
        rejection = check_offer(offer, self._config)
        if rejection is not None:
            raise LocalProtocolError(f"cannot receive a rejected offer: {rejection.message}")
        manifest = offer.signed_manifest.decode()
        self._upload_id = offer.upload_id
        self._size = manifest.size
        self._sha256 = manifest.sha256
        _check_resume(committed, self._size, hasher=hasher, verified=verified)
        self._committed = self._size if verified else committed
        self._hasher: Hasher = hasher if hasher is not None else hashlib.sha256()
        self._state = _V if verified else _R
        self._input = ReceiverInput.OFFER
        self._deadline: float | None = None
        self._buffer = Reassembly()
        self._buffer_limit = 0
        self._stats = ReceiverStats()
        self._use_offer(offer)

    # -- read-only view ------------------------------------------------------------------------

    @property
    def state(self) -> ReceiverState:
        """The current state."""
        return self._state

    @property
    def upload_id(self) -> str:
        """The upload this receiver serves."""
        return self._upload_id

    @property
    def size(self) -> int:
        """Segment size in bytes, from the manifest."""
        return self._size

    @property
    def committed(self) -> int:
        """Bytes handed to the shell as ``WriteData`` (a contiguous prefix)."""
        return self._committed

    @property
    def buffered_bytes(self) -> int:
        """Bytes held out of order, in memory only."""
        return self._buffer.held_bytes

    @property
    def evictable(self) -> bool:
        """Whether the shell may drop this object: nothing lives only in its memory."""
        return self._state is not _R

    @property
    def stats(self) -> ReceiverStats:
        """A copy of the counters."""
        return replace(self._stats)

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called next (the idle expiry), or ``None``."""
        return self._deadline

    # -- inputs --------------------------------------------------------------------------------

    def receive_offer(self, offer: Offer, now: float) -> list[ReceiverAction]:
        """Answer an offer (first or repeated) with the committed offset, authoritatively.

        A repeated offer restarts the window at ``committed`` (the buffer is dropped, since the
        device resends from there) and may change ``chunk_size`` and ``window``; one that no
        longer passes ``check_offer`` gets the rejected ack and changes nothing.
        """
        self._enter(ReceiverInput.OFFER, offer.upload_id)
        self._stats.offers += 1
        if self._state is _V:
            return [SendAck(self._verified_ack("offer"))]
        rejection = check_offer(offer, self._config)
        if rejection is not None:
            return [SendAck(rejection)]
        self._use_offer(offer)
        self._wake(now)
        return self._reply("offer", [])

    def receive_chunk(self, chunk: Chunk, now: float) -> list[ReceiverAction]:
        """Place a chunk (CRC already checked by ``decode_chunk``) and answer with an ack.

        Duplicates, overlaps and out-of-order chunks are normal and answered with the current
        ``committed``. Raises ``RemoteProtocolError`` (state unchanged) for a chunk that no valid
        sender produces: data past the manifest's size, or longer than ``max_chunk_size``.
        """
        self._enter(ReceiverInput.CHUNK, chunk.upload_id)
        if self._state is _V:
            self._stats.chunks += 1
            self._stats.duplicates += 1
            return [SendAck(self._verified_ack("chunk"))]
        self._check_chunk(chunk)
        self._stats.chunks += 1
        self._wake(now)
        return self._reply("chunk", self._place(chunk))

    def receive_corrupt_chunk(self, error: ChunkCrcError) -> None:
        """Count a chunk that failed its CRC (its header names this upload, but is untrusted)."""
        self._enter(ReceiverInput.CORRUPT_CHUNK, error.upload_id)
        self._stats.corrupt_chunks += 1

    def handle_timeout(self, now: float) -> list[ReceiverAction]:
        """At the idle expiry, drop the buffer and become ``DORMANT`` (evictable).

        Early or extra calls do nothing. Returns no actions; the list keeps the entry points alike.
        """
        self._enter(ReceiverInput.TIMEOUT, self._upload_id)
        if self._deadline is None or now < self._deadline:
            return []
        self._buffer.clear()
        self._deadline = None
        self._goto(_D)
        return []

    # -- internals -----------------------------------------------------------------------------

    def _enter(self, what: ReceiverInput, upload_id: str) -> None:
        if upload_id != self._upload_id:
            raise LocalProtocolError(
                f"{what.value} for upload {upload_id} routed to the receiver of {self._upload_id}"
            )
        if (self._state, what) not in RECEIVER_TRANSITIONS:
            raise LocalProtocolError(f"{what.value} is not allowed in state {self._state.name}")
        self._input = what

    def _goto(self, state: ReceiverState) -> None:
        if state not in RECEIVER_TRANSITIONS[self._state, self._input]:
            raise LocalProtocolError(
                f"internal error: {self._state.name} -> {state.name} on {self._input.value}"
            )
        self._state = state

    def _use_offer(self, offer: Offer) -> None:
        window = min(offer.window, self._config.max_window)
        self._buffer_limit = window * offer.chunk_size
        self._buffer.clear()

    def _wake(self, now: float) -> None:
        self._goto(_R)
        self._deadline = now + self._config.idle_timeout_s

    def _check_chunk(self, chunk: Chunk) -> None:
        if chunk.end > self._size:
            raise RemoteProtocolError(
                f"chunk [{chunk.offset}, {chunk.end}) goes past the {self._size}-byte segment"
            )
        if len(chunk.data) > self._config.max_chunk_size:
            raise RemoteProtocolError(
                f"chunk of {len(chunk.data)} bytes exceeds max_chunk_size "
                f"{self._config.max_chunk_size}"
            )

    def _place(self, chunk: Chunk) -> list[ReceiverAction]:
        if chunk.end <= self._committed:
            self._stats.duplicates += 1
            return []
        if chunk.offset > self._committed:
            self._hold(chunk)
            return []
        if chunk.offset < self._committed:
            self._stats.overlaps += 1
        writes: list[ReceiverAction] = [self._commit(chunk.offset, chunk.data)]
        while (piece := self._buffer.take_ready(self._committed)) is not None:
            offset, data = piece
            if offset + len(data) > self._committed:
                writes.append(self._commit(offset, data))
        return writes

    def _hold(self, chunk: Chunk) -> None:
        # Only chunks the device may legitimately have in flight are held: [committed,
        # committed + window * chunk_size). That and the byte limit bound memory per upload.
        if chunk.end > self._committed + self._buffer_limit:
            self._stats.beyond_window += 1
            return
        placed = self._buffer.add(chunk.offset, chunk.data, limit_bytes=self._buffer_limit)
        if placed is Placement.HELD:
            self._stats.out_of_order += 1
        elif placed is Placement.DUPLICATE:
            self._stats.duplicates += 1
        else:
            self._stats.beyond_window += 1

    def _commit(self, offset: int, data: bytes) -> WriteData:
        # Overlapping chunks contribute only the bytes past the committed prefix; slicing from
        # 0 returns the same bytes object, so the common case copies nothing.
        tail = data[self._committed - offset :]
        self._hasher.update(tail)
        write = WriteData(self._committed, tail)
        self._committed += len(tail)
        return write

    def _reply(self, in_reply_to: InReplyTo, actions: list[ReceiverAction]) -> list[ReceiverAction]:
        if self._committed < self._size:
            ack = Ack(
                upload_id=self._upload_id,
                state="receiving",
                committed=self._committed,
                in_reply_to=in_reply_to,
            )
            return [*actions, SendAck(ack)]
        return actions + self._verify(in_reply_to)

    def _verify(self, in_reply_to: InReplyTo) -> list[ReceiverAction]:
        # The buffer is empty here: every held piece lies below the size, so it was drained.
        digest = self._hasher.hexdigest()
        if digest == self._sha256:
            self._deadline = None
            self._goto(_V)
            return [Complete(digest), SendAck(self._verified_ack(in_reply_to))]
        # The bytes are durable but wrong (a corrupt source file, or damage the CRC missed):
        # start over from zero; the device learns of it and retries from a fresh offer.
        self._stats.hash_mismatches += 1
        self._committed = 0
        self._hasher = hashlib.sha256()
        text = f"received {self._size} bytes with sha256 {digest}, manifest says {self._sha256}"
        ack = failed_ack(
            self._upload_id,
            committed=0,
            code=CODE_HASH_MISMATCH,
            in_reply_to=in_reply_to,
            message=text,
        )
        return [Discard(), SendAck(ack)]

    def _verified_ack(self, in_reply_to: InReplyTo) -> Ack:
        return Ack(
            upload_id=self._upload_id,
            state="verified",
            committed=self._size,
            in_reply_to=in_reply_to,
            sha256=self._sha256,
        )


def _check_resume(committed: int, size: int, *, hasher: Hasher | None, verified: bool) -> None:
    if not 0 <= committed <= size:
        raise LocalProtocolError(f"committed {committed} is outside [0, {size}]")
    if committed > 0 and hasher is None and not verified:
        raise LocalProtocolError("resuming with committed bytes needs a hasher fed those bytes")
