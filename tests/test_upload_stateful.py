"""The whole upload over a hostile link: an ``UploadSender`` and an ``UploadReceiver`` joined by
a link that drops, duplicates, reorders, corrupts and truncates, in virtual time, with either side
restarting and the receiver sometimes losing its disk.

Each side has a minimal shell written here the way the real shells must behave: the receiver's
shell keeps an in-memory "disk" (bytes made durable by ``WriteData``, the stored offer, a "final"
flag set by ``Complete``) and rebuilds its ``UploadReceiver`` from that after a restart; the
device's shell reads chunk bytes from the true segment. Every message crosses the link encoded, so
the codecs are exercised too.

Safety, checked after every step: the disk is always a prefix of the true segment (a damaged chunk
is never committed), nothing exceeds the size, an ack never promises more than is durable, and a
sender reaching VERIFIED means the receiver holds the final, byte-identical segment. Liveness,
checked at teardown: once the link turns lossless, the upload finishes verified (after at most two
fresh senders, as the device's queue would retry a FAILED attempt).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.errors import DecodeError
from protocol.upload import (
    ChunkCrcError,
    Complete,
    Discard,
    Finished,
    Offer,
    ReceiverAction,
    ReceiverConfig,
    SendAck,
    SendChunk,
    SenderAction,
    SenderConfig,
    SenderState,
    SendOffer,
    UploadReceiver,
    UploadResult,
    UploadSender,
    WriteData,
    check_offer,
    decode_ack,
    decode_chunk,
    decode_offer,
    encode_chunk,
    encode_control,
    unknown_ack,
)
from tests.fuzz import STATEFUL_EXAMPLES
from tests.upload_support import segment_bytes, signed_manifest_for

MAX_MESSAGE = 4096
LIVE = {SenderState.OFFERING, SenderState.SENDING, SenderState.AWAITING_VERIFY}


@dataclass
class Disk:
    """What survives a receiver restart."""

    data: bytearray = field(default_factory=bytearray)
    offer: Offer | None = None
    final: bool = False


class UploadOverHostileLink(RuleBasedStateMachine):
    """Sender and receiver shells joined by a lossy link, in virtual time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.to_receiver: list[tuple[str, bytes]] = []
        self.to_sender: list[bytes] = []
        self.disk = Disk()
        self.receiver: UploadReceiver | None = None
        self.disk_lost = False
        self.outcomes: list[Finished] = []
        self.damaged = 0
        self.overlaps = 0
        self.sender_timeouts = 0

    # -- set-up --------------------------------------------------------------------------------

    @initialize(
        chunk=st.integers(min_value=1, max_value=6),
        size=st.sampled_from(["zero", "one", "multiple", "ragged"]),
        count=st.integers(min_value=1, max_value=10),
        windows=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    )
    def setup(self, chunk: int, size: str, count: int, windows: tuple[int, int]) -> None:
        window, max_window = windows  # the receiver may hold fewer than the sender sends
        length = {"zero": 0, "one": 1, "multiple": chunk * count, "ragged": chunk * count + 1}
        self.segment = segment_bytes(length[size], seed=count)
        self.manifest = signed_manifest_for(self.segment)
        self.sender_config = SenderConfig(
            chunk_size=chunk, window=window, ack_timeout_s=1.0, max_retries=3, min_chunk_size=1
        )
        self.receiver_config = ReceiverConfig(
            max_chunk_size=64, max_size=1000, max_window=max_window, idle_timeout_s=4.0
        )
        self.sender = self._new_sender()

    def _new_sender(self) -> UploadSender:
        sender = UploadSender(
            self.manifest, max_message_size=MAX_MESSAGE, config=self.sender_config
        )
        self.sender = sender
        self.sender_timeouts = 0
        self._run_sender(sender.start(self.now))
        return sender

    # -- the device's shell --------------------------------------------------------------------

    def _run_sender(self, actions: list[SenderAction]) -> None:
        for action in actions:
            if isinstance(action, SendOffer):
                assert len(action.payload) <= MAX_MESSAGE
                self.to_receiver.append(("offer", action.payload))
            elif isinstance(action, SendChunk):
                assert action.length <= self.sender.chunk_size
                end = action.offset + action.length
                message = encode_chunk(
                    action.upload_id, action.offset, self.segment[action.offset : end]
                )
                assert len(message) <= MAX_MESSAGE
                self.to_receiver.append(("chunk", message))
            else:
                self.outcomes.append(action)

    def _sender_gets(self, payload: bytes) -> None:
        self._run_sender(self.sender.receive_ack(decode_ack(payload), self.now))

    # -- the receiver's shell ------------------------------------------------------------------

    def _existing_receiver(self) -> UploadReceiver | None:
        """The live receiver, rebuilt from the disk after a restart, or None if never offered."""
        if self.receiver is None and self.disk.offer is not None:
            self.receiver = UploadReceiver(
                self.disk.offer,
                self.receiver_config,
                committed=len(self.disk.data),
                hasher=hashlib.sha256(self.disk.data),
                verified=self.disk.final,
            )
        return self.receiver

    def _receiver_gets(self, kind: str, payload: bytes) -> None:
        if kind == "offer":
            offer = decode_offer(payload)
            assert check_offer(offer, self.receiver_config) is None  # nothing here tampers
            if self.disk.offer is None:
                self.disk.offer = offer  # stored durably before the receiver exists
            receiver = self._existing_receiver()
            assert receiver is not None
            self._run_receiver(receiver.receive_offer(offer, self.now))
            return
        try:
            chunk = decode_chunk(payload)
        except ChunkCrcError as error:
            self.damaged += 1
            receiver = self._existing_receiver()
            if receiver is not None and error.upload_id == receiver.upload_id:
                receiver.receive_corrupt_chunk(error)
            return
        except DecodeError:
            self.damaged += 1
            return  # damaged beyond recognition: dropped, as a real shell would
        receiver = self._existing_receiver()
        if receiver is None or chunk.upload_id != receiver.upload_id:
            self.to_sender.append(encode_control(unknown_ack(chunk.upload_id, in_reply_to="chunk")))
            return
        if chunk.offset < receiver.committed < chunk.end:
            self.overlaps += 1
        self._run_receiver(receiver.receive_chunk(chunk, self.now))

    def _run_receiver(self, actions: list[ReceiverAction]) -> None:
        for action in actions:
            if isinstance(action, WriteData):
                assert action.offset == len(self.disk.data)
                self.disk.data += action.data  # "fsync" happens before the ack below is sent
            elif isinstance(action, Complete):
                assert action.sha256 == hashlib.sha256(self.segment).hexdigest()
                self.disk.final = True
            elif isinstance(action, Discard):
                # Every damage this link does is caught by the CRC, so the hash never mismatches.
                raise AssertionError("a complete upload failed its SHA-256 check")  # noqa: TRY004
            else:
                assert isinstance(action, SendAck)
                self.to_sender.append(encode_control(action.ack))

    # -- the hostile link ----------------------------------------------------------------------

    @rule(
        pick=st.integers(min_value=0),
        fate=st.sampled_from(["deliver", "drop", "duplicate", "corrupt", "truncate"]),
        position=st.integers(min_value=0),
        mask=st.integers(min_value=1, max_value=2**32 - 1),
    )
    def to_receiver_link(self, pick: int, fate: str, position: int, mask: int) -> None:
        """Deliver any queued message (so: reordering), or drop, duplicate or damage it."""
        if not self.to_receiver:
            return
        kind, payload = self.to_receiver.pop(pick % len(self.to_receiver))
        if fate == "drop":
            return
        if fate == "duplicate":
            self.to_receiver.append((kind, payload))
        elif kind == "chunk" and fate == "corrupt" and len(payload) >= 4:
            payload = _flip_burst(payload, position, mask)
        elif kind == "chunk" and fate == "truncate" and payload:
            payload = payload[: position % len(payload)]
        self._receiver_gets(kind, payload)

    @rule(
        pick=st.integers(min_value=0),
        truncate=st.booleans(),
        position=st.integers(min_value=0),
        mask=st.integers(min_value=1, max_value=2**32 - 1),
    )
    def damage_in_flight(self, pick: int, truncate: bool, position: int, mask: int) -> None:
        """Damage a queued chunk where it waits; whichever delivery comes next carries it."""
        queued = [i for i, (kind, _) in enumerate(self.to_receiver) if kind == "chunk"]
        if not queued:
            return
        index = queued[pick % len(queued)]
        payload = self.to_receiver[index][1]
        if len(payload) < 4:
            return  # already truncated to almost nothing
        if truncate:
            payload = payload[: position % len(payload)]
        else:
            payload = _flip_burst(payload, position, mask)
        self.to_receiver[index] = ("chunk", payload)

    @rule(pick=st.integers(min_value=0), fate=st.sampled_from(["deliver", "drop", "duplicate"]))
    def to_sender_link(self, pick: int, fate: str) -> None:
        """Deliver any queued ack, or drop or duplicate it."""
        if not self.to_sender:
            return
        payload = self.to_sender.pop(pick % len(self.to_sender))
        if fate == "duplicate":
            self.to_sender.append(payload)
        if fate != "drop":
            self._sender_gets(payload)

    @rule(count=st.integers(min_value=1, max_value=5))
    def good_spell(self, count: int) -> None:
        """A stretch of perfect network: deliver up to ``count`` messages in order."""
        for _ in range(count):
            if self.to_receiver:
                self._receiver_gets(*self.to_receiver.pop(0))
            elif self.to_sender:
                self._sender_gets(self.to_sender.pop(0))

    @rule(dt=st.sampled_from([0.25, 1.0, 2.5, 5.0]))
    def time_passes(self, dt: float) -> None:
        """Advance virtual time and fire whatever timers are due."""
        self.now += dt
        self._fire_timers()

    @rule(
        what=st.sampled_from(["restart sender", "restart receiver", "receiver loses disk"]),
        chunk=st.integers(min_value=1, max_value=6),
    )
    def mishap(self, what: str, chunk: int) -> None:
        """A restart of either side, or the receiver losing an unfinished upload entirely."""
        if what == "restart sender":
            # The device reboots (or its queue retries): a fresh sender knows nothing, and may
            # cut different chunks (new config, or a smaller broker limit after reconnecting),
            # so old and new chunks overlap. After VERIFIED the segment is deleted: no restart.
            if self.sender.state is not SenderState.VERIFIED:
                self.sender_config = replace(self.sender_config, chunk_size=chunk)
                self._new_sender()
        elif what == "restart receiver":
            self.receiver = None  # memory (the out-of-order buffer) lost, disk kept
        elif not self.disk.final:
            # e.g. its scratch area was wiped. A *verified* upload is durable by definition.
            self.receiver = None
            self.disk = Disk()
            self.disk_lost = True

    # -- safety --------------------------------------------------------------------------------

    @invariant()
    def disk_is_a_prefix_of_the_segment(self) -> None:
        assert self.disk.data == self.segment[: len(self.disk.data)]
        assert not self.disk.final or self.disk.data == self.segment

    @invariant()
    def nothing_exceeds_the_size(self) -> None:
        assert self.sender.committed <= self.sender.next_offset <= len(self.segment)
        if self.receiver is not None:
            assert self.receiver.committed == len(self.disk.data) <= len(self.segment)

    @invariant()
    def acks_never_promise_more_than_is_durable(self) -> None:
        if not self.disk_lost:
            assert self.sender.committed <= len(self.disk.data)

    @invariant()
    def verified_means_stored_and_identical(self) -> None:
        if self.sender.state is SenderState.VERIFIED:
            assert self.disk.final
            assert self.disk.data == self.segment
        assert all(o.result is not UploadResult.REJECTED for o in self.outcomes)

    # -- liveness ------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Heal the link: the upload must then finish verified, after at most one fresh sender.

        A live sender may still fail after healing (its retries may be spent, or the receiver
        may have gone back in a way only the next attempt learns); the device's queue then
        retries, and that fresh sender on a healed link must succeed without a single timeout.
        """
        if not hasattr(self, "sender"):
            return  # set-up itself failed; Hypothesis reports that
        event("sender before healing", self.sender.state.name)
        event("damaged chunks caught", str(min(self.damaged, 3)))
        event("overlapping chunks", str(min(self.overlaps, 3)))
        self._run_lossless()
        event("fresh sender needed after healing", str(self.sender.state is SenderState.FAILED))
        if self.sender.state is SenderState.FAILED:
            self._new_sender()
            self._run_lossless()
            assert self.sender_timeouts == 0
        assert self.sender.state is SenderState.VERIFIED, self.outcomes
        assert self.disk.final
        assert self.disk.data == self.segment

    def _run_lossless(self) -> None:
        for _step in range(20_000):
            if self.to_receiver:
                self._receiver_gets(*self.to_receiver.pop(0))
            elif self.to_sender:
                self._sender_gets(self.to_sender.pop(0))
            elif self.sender.state in LIVE:
                deadlines = [d for d in self._deadlines() if d is not None]
                self.now = max(self.now, min(deadlines))
                self._fire_timers()
            else:
                return
        raise AssertionError("the lossless link did not settle in 20,000 steps")

    def _deadlines(self) -> list[float | None]:
        receiver = self.receiver.next_deadline() if self.receiver is not None else None
        return [self.sender.next_deadline(), receiver]

    def _fire_timers(self) -> None:
        deadline = self.sender.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.sender_timeouts += 1
            self._run_sender(self.sender.handle_timeout(self.now))
        if self.receiver is not None:
            deadline = self.receiver.next_deadline()
            if deadline is not None and deadline <= self.now:
                self.receiver.handle_timeout(self.now)
            if self.receiver.evictable:
                self.receiver = None  # the shell frees memory; the disk has everything


def _flip_burst(payload: bytes, position: int, mask: int) -> bytes:
    """XOR a nonzero 32-bit mask into 4 consecutive bytes: a burst CRC-32 always detects."""
    damaged = bytearray(payload)
    start = position % (len(damaged) - 3)
    value = int.from_bytes(damaged[start : start + 4], "big") ^ mask
    damaged[start : start + 4] = value.to_bytes(4, "big")
    return bytes(damaged)


UploadOverHostileLink.TestCase.settings = settings(
    max_examples=STATEFUL_EXAMPLES,
    stateful_step_count=100,
    deadline=None,
    # The explain phase replays a failing run thousands of times (minutes for a long run);
    # the shrunk steps are explanation enough.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestUploadOverHostileLink = UploadOverHostileLink.TestCase
