"""The evidence receiver's side of the upload: ``UploadReceiver`` and ``check_offer``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.manifest import SignedManifest
from protocol.upload import (
    CODE_BAD_CHUNK_SIZE,
    CODE_BAD_MANIFEST,
    CODE_HASH_MISMATCH,
    CODE_TOO_LARGE,
    CODE_UPLOAD_ID_MISMATCH,
    RECEIVER_TRANSITIONS,
    Ack,
    Chunk,
    ChunkCrcError,
    Complete,
    Discard,
    Offer,
    ReceiverAction,
    ReceiverConfig,
    ReceiverInput,
    ReceiverState,
    SendAck,
    UploadReceiver,
    WriteData,
    check_offer,
    make_offer,
)
from tests.upload_support import (
    SMALL_RECEIVER,
    new_receiver,
    offer_for,
    segment_bytes,
    signed_manifest_for,
)

DATA = segment_bytes(20)
UID = signed_manifest_for(DATA).upload_id()


def piece(offset: int, length: int = 4, data: bytes = DATA) -> Chunk:
    return Chunk(UID, offset, data[offset : offset + length])


def writes(actions: list[ReceiverAction]) -> list[tuple[int, bytes]]:
    return [(a.offset, a.data) for a in actions if isinstance(a, WriteData)]


def last_ack(actions: list[ReceiverAction]) -> Ack:
    assert isinstance(actions[-1], SendAck)
    return actions[-1].ack


def started(
    data: bytes = DATA, config: ReceiverConfig = SMALL_RECEIVER, *, window: int = 2
) -> UploadReceiver:
    """A receiver that took the offer of 4-byte chunks, ``window`` in flight."""
    receiver = new_receiver(data, config)
    receiver.receive_offer(offer_for(data, window=window), 0.0)
    return receiver


# -- offers --------------------------------------------------------------------------------


def test_first_offer_is_answered_with_committed_zero() -> None:
    receiver = new_receiver(DATA)
    assert receiver.next_deadline() is None
    [reply] = receiver.receive_offer(offer_for(DATA), 1.0)
    assert reply == SendAck(Ack(upload_id=UID, state="receiving", committed=0, in_reply_to="offer"))
    assert receiver.next_deadline() == 6.0


def test_repeated_offer_reports_committed_and_restarts_the_window() -> None:
    receiver = started()
    receiver.receive_chunk(piece(0), 0.1)
    receiver.receive_chunk(piece(8), 0.2)
    assert receiver.buffered_bytes == 4
    assert last_ack(receiver.receive_offer(offer_for(DATA), 0.3)).committed == 4
    assert receiver.buffered_bytes == 0


def test_empty_segment_is_verified_at_the_offer() -> None:
    receiver = new_receiver(b"")
    complete, reply = receiver.receive_offer(offer_for(b""), 0.0)
    assert complete == Complete(hashlib.sha256(b"").hexdigest())
    assert isinstance(reply, SendAck)
    assert (reply.ack.state, reply.ack.in_reply_to) == ("verified", "offer")
    assert receiver.state is ReceiverState.VERIFIED


# -- chunks --------------------------------------------------------------------------------


def test_in_order_chunk_is_written_then_acked() -> None:
    receiver = started()
    actions = receiver.receive_chunk(piece(0), 0.1)
    assert writes(actions) == [(0, DATA[:4])]
    assert last_ack(actions) == Ack(
        upload_id=UID, state="receiving", committed=4, in_reply_to="chunk"
    )


def test_out_of_order_chunks_wait_for_the_gap() -> None:
    receiver = started(window=3)
    assert writes(receiver.receive_chunk(piece(8), 0.1)) == []
    assert writes(receiver.receive_chunk(piece(4), 0.1)) == []
    actions = receiver.receive_chunk(piece(0), 0.2)
    assert writes(actions) == [(0, DATA[0:4]), (4, DATA[4:8]), (8, DATA[8:12])]
    assert last_ack(actions).committed == 12
    assert receiver.stats.out_of_order == 2
    assert receiver.buffered_bytes == 0


def test_duplicates_are_acked_without_writing() -> None:
    receiver = started()
    receiver.receive_chunk(piece(0), 0.1)
    actions = receiver.receive_chunk(piece(0), 0.2)
    assert writes(actions) == []
    assert last_ack(actions).committed == 4
    receiver.receive_chunk(piece(8), 0.3)
    receiver.receive_chunk(piece(8), 0.3)
    assert receiver.stats.duplicates == 2


def test_overlapping_chunk_commits_only_its_new_tail() -> None:
    receiver = started()
    receiver.receive_chunk(piece(0, 6), 0.1)
    actions = receiver.receive_chunk(piece(4, 8), 0.2)
    assert writes(actions) == [(6, DATA[6:12])]
    assert receiver.stats.overlaps == 1


def test_overlapping_held_pieces_drain_correctly() -> None:
    receiver = started(window=3)
    receiver.receive_chunk(piece(6, 4), 0.1)
    receiver.receive_chunk(piece(4, 4), 0.1)
    actions = receiver.receive_chunk(piece(0, 5), 0.2)
    assert writes(actions) == [(0, DATA[0:5]), (5, DATA[5:8]), (8, DATA[8:10])]


def test_chunks_beyond_the_window_are_dropped() -> None:
    # window 2 x chunk_size 4: only [committed, committed + 8) may be held.
    receiver = started()
    receiver.receive_chunk(piece(4), 0.1)
    assert receiver.receive_chunk(piece(8), 0.1) == [
        SendAck(Ack(upload_id=UID, state="receiving", committed=0, in_reply_to="chunk"))
    ]
    assert receiver.stats.beyond_window == 1
    assert receiver.buffered_bytes == 4


def test_window_is_clamped_to_max_window() -> None:
    config = ReceiverConfig(max_chunk_size=64, max_window=2)
    data = segment_bytes(100)
    receiver = UploadReceiver(offer_for(data, chunk_size=4, window=1000), config)
    receiver.receive_offer(offer_for(data, chunk_size=4, window=1000), 0.0)
    for offset in (4, 8, 12):
        receiver.receive_chunk(Chunk(receiver.upload_id, offset, data[offset : offset + 4]), 0.0)
    assert receiver.buffered_bytes == 4
    assert receiver.stats.beyond_window == 2


def test_held_bytes_never_exceed_the_window() -> None:
    # Odd-sized pieces from an earlier sender can overlap; the byte bound still holds.
    receiver = started()
    receiver.receive_chunk(piece(1, 5), 0.1)
    receiver.receive_chunk(piece(2, 4), 0.1)
    assert receiver.buffered_bytes == 5
    assert receiver.stats.beyond_window == 1


def test_last_chunk_completes_and_verifies() -> None:
    receiver = started()
    for offset in range(0, 16, 4):
        receiver.receive_chunk(piece(offset), 0.1)
    actions = receiver.receive_chunk(piece(16), 0.2)
    assert writes(actions) == [(16, DATA[16:])]
    assert actions[1] == Complete(hashlib.sha256(DATA).hexdigest())
    ack = last_ack(actions)
    assert (ack.state, ack.committed, ack.sha256) == ("verified", 20, actions[1].sha256)
    assert receiver.state is ReceiverState.VERIFIED
    assert receiver.evictable
    assert receiver.next_deadline() is None


def test_verified_upload_answers_everything_with_verified() -> None:
    receiver = started(b"abc")
    receiver.receive_chunk(Chunk(signed_manifest_for(b"abc").upload_id(), 0, b"abc"), 0.0)
    uid = receiver.upload_id
    for actions in (
        receiver.receive_offer(offer_for(b"abc"), 1.0),
        receiver.receive_chunk(Chunk(uid, 0, b"abc"), 1.0),
        receiver.receive_chunk(Chunk(uid, 1, b"b"), 1.0),
        receiver.handle_timeout(1e9),
    ):
        assert all(isinstance(a, SendAck) and a.ack.state == "verified" for a in actions)
    assert receiver.state is ReceiverState.VERIFIED


def test_hash_mismatch_discards_and_starts_over() -> None:
    impostor = bytes(b ^ 0xFF for b in DATA)  # same size, different bytes
    receiver = started()
    for offset in range(0, 16, 4):
        receiver.receive_chunk(piece(offset, data=impostor), 0.1)
    actions = receiver.receive_chunk(piece(16, data=impostor), 0.2)
    assert isinstance(actions[-2], Discard)
    ack = last_ack(actions)
    assert (ack.state, ack.code, ack.committed) == ("failed", CODE_HASH_MISMATCH, 0)
    assert (receiver.state, receiver.committed) == (ReceiverState.RECEIVING, 0)
    assert receiver.stats.hash_mismatches == 1
    # The real bytes then go through.
    for offset in range(0, 20, 4):
        actions = receiver.receive_chunk(piece(offset), 0.3)
    assert last_ack(actions).state == "verified"


def test_invalid_chunks_are_remote_errors_and_change_nothing() -> None:
    receiver = started()
    with pytest.raises(RemoteProtocolError, match="past the 20-byte segment"):
        receiver.receive_chunk(Chunk(UID, 18, b"abc"), 0.1)
    assert receiver.committed == 0
    assert receiver.stats.chunks == 0
    big = segment_bytes(100)
    receiver = started(big)
    with pytest.raises(RemoteProtocolError, match="exceeds max_chunk_size 64"):
        receiver.receive_chunk(Chunk(receiver.upload_id, 0, big[:65]), 0.1)
    assert receiver.committed == 0


def test_longer_chunks_from_an_earlier_offer_are_still_taken() -> None:
    receiver = started()  # chunk_size 4, but 8 <= max_chunk_size 64
    assert writes(receiver.receive_chunk(piece(0, 8), 0.1)) == [(0, DATA[:8])]


def test_corrupt_chunks_are_counted() -> None:
    receiver = started()
    receiver.receive_corrupt_chunk(ChunkCrcError("bad", upload_id=UID, offset=0, length=4))
    assert receiver.stats.corrupt_chunks == 1
    assert receiver.committed == 0


# -- idle expiry, restart ------------------------------------------------------------------


def test_idle_expiry_drops_the_buffer_and_allows_eviction() -> None:
    receiver = started()
    receiver.receive_chunk(piece(0), 1.0)
    receiver.receive_chunk(piece(8), 1.0)
    assert not receiver.evictable
    assert receiver.handle_timeout(5.9) == []
    assert receiver.state is ReceiverState.RECEIVING
    receiver.handle_timeout(6.0)
    assert (receiver.state, receiver.buffered_bytes, receiver.evictable) == (
        ReceiverState.DORMANT,
        0,
        True,
    )
    assert receiver.next_deadline() is None
    assert writes(receiver.receive_chunk(piece(4), 7.0)) == [(4, DATA[4:8])]
    assert receiver.state is ReceiverState.RECEIVING
    assert receiver.next_deadline() == 12.0


def test_restart_resumes_from_the_durable_prefix() -> None:
    receiver = UploadReceiver(
        offer_for(DATA), SMALL_RECEIVER, committed=12, hasher=hashlib.sha256(DATA[:12])
    )
    assert last_ack(receiver.receive_offer(offer_for(DATA), 0.0)).committed == 12
    receiver.receive_chunk(piece(12), 0.1)
    assert last_ack(receiver.receive_chunk(piece(16), 0.1)).state == "verified"


def test_restart_with_a_complete_unverified_file_verifies_at_the_offer() -> None:
    receiver = UploadReceiver(
        offer_for(DATA), SMALL_RECEIVER, committed=20, hasher=hashlib.sha256(DATA)
    )
    complete, ack = receiver.receive_offer(offer_for(DATA), 0.0)
    assert isinstance(complete, Complete)
    assert isinstance(ack, SendAck)
    assert ack.ack.state == "verified"


def test_restored_verified_upload_answers_verified() -> None:
    receiver = UploadReceiver(offer_for(DATA), SMALL_RECEIVER, verified=True)
    [reply] = receiver.receive_offer(offer_for(DATA), 0.0)
    assert isinstance(reply, SendAck)
    assert (reply.ack.state, reply.ack.committed) == ("verified", 20)


@pytest.mark.parametrize(
    ("committed", "hasher", "text"),
    [(21, None, "outside"), (-1, None, "outside"), (4, None, "needs a hasher")],
)
def test_resume_state_is_checked(committed: int, hasher: None, text: str) -> None:
    with pytest.raises(LocalProtocolError, match=text):
        UploadReceiver(offer_for(DATA), SMALL_RECEIVER, committed=committed, hasher=hasher)


# -- rejections ----------------------------------------------------------------------------


def _tampered() -> Offer:
    genuine = signed_manifest_for(DATA)
    forged = signed_manifest_for(segment_bytes(20, seed=9))
    # The ID of the genuine manifest, with other manifest bytes under it.
    return Offer(upload_id=genuine.upload_id(), signed_manifest=forged, chunk_size=4, window=2)


def _undecodable() -> Offer:
    broken = SignedManifest(manifest="{}", signature="ab" * 64, key_id="0123456789abcdef")
    return Offer(upload_id=broken.upload_id(), signed_manifest=broken, chunk_size=4, window=2)


REJECTIONS: list[tuple[Callable[[], Offer], str]] = [
    (_tampered, CODE_UPLOAD_ID_MISMATCH),
    (_undecodable, CODE_BAD_MANIFEST),
    (
        lambda: make_offer(
            signed_manifest_for(DATA, envelope_key_id="fedcba9876543210"), chunk_size=4, window=2
        ),
        CODE_BAD_MANIFEST,
    ),
    (lambda: offer_for(DATA, chunk_size=65), CODE_BAD_CHUNK_SIZE),
    (lambda: offer_for(segment_bytes(10_001)), CODE_TOO_LARGE),
]


@pytest.mark.parametrize(("make", "code"), REJECTIONS)
def test_offers_are_rejected_permanently(make: Callable[[], Offer], code: str) -> None:
    offer = make()
    ack = check_offer(offer, SMALL_RECEIVER)
    assert ack is not None
    assert (ack.upload_id, ack.state, ack.code, ack.in_reply_to) == (
        offer.upload_id,
        "rejected",
        code,
        "offer",
    )
    assert ack.message
    with pytest.raises(LocalProtocolError, match="rejected offer"):
        UploadReceiver(offer, SMALL_RECEIVER)


def test_limits_are_inclusive() -> None:
    assert check_offer(offer_for(segment_bytes(10_000), chunk_size=64), SMALL_RECEIVER) is None


def test_reoffer_over_the_limit_is_rejected_and_changes_nothing() -> None:
    receiver = started()
    receiver.receive_chunk(piece(0), 0.1)
    [reply] = receiver.receive_offer(offer_for(DATA, chunk_size=1000), 0.2)
    assert isinstance(reply, SendAck)
    assert (reply.ack.state, reply.ack.code) == ("rejected", CODE_BAD_CHUNK_SIZE)
    assert receiver.committed == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"max_chunk_size": 0},
        {"max_size": -1},
        {"max_size": 2**53},
        {"max_window": 0},
        {"max_window": 1025},
        {"idle_timeout_s": 0.0},
    ],
)
def test_config_is_validated(changes: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        ReceiverConfig(**changes)  # type: ignore[arg-type]


# -- every (state, input) pair ---------------------------------------------------------------

R = ReceiverState


def _in_state(state: ReceiverState) -> UploadReceiver:
    receiver = started()
    receiver.receive_chunk(piece(8), 0.0)  # something held, to see it dropped
    if state is R.DORMANT:
        receiver.handle_timeout(100.0)
    elif state is R.VERIFIED:
        for offset in range(0, 20, 4):
            receiver.receive_chunk(piece(offset), 0.0)
    assert receiver.state is state
    return receiver


OTHER = "f" * 32
INPUTS: dict[str, Callable[[UploadReceiver], object]] = {
    "offer": lambda r: r.receive_offer(offer_for(DATA), 200.0),
    "offer over limit": lambda r: r.receive_offer(offer_for(DATA, chunk_size=65), 200.0),
    "in-order chunk": lambda r: r.receive_chunk(piece(0), 200.0),
    "last chunk": lambda r: r.receive_chunk(Chunk(UID, 0, DATA), 200.0),
    "held chunk": lambda r: r.receive_chunk(piece(4), 200.0),
    "corrupt chunk": lambda r: r.receive_corrupt_chunk(
        ChunkCrcError("x", upload_id=UID, offset=0, length=4)
    ),
    "early timeout": lambda r: r.handle_timeout(0.0),
    "timeout": lambda r: r.handle_timeout(1000.0),
    "offer for another upload": lambda r: r.receive_offer(
        msgspec.structs.replace(offer_for(DATA), upload_id=OTHER), 200.0
    ),
    "chunk for another upload": lambda r: r.receive_chunk(Chunk(OTHER, 0, b"x"), 200.0),
    "corrupt chunk for another upload": lambda r: r.receive_corrupt_chunk(
        ChunkCrcError("x", upload_id=OTHER, offset=0, length=4)
    ),
}
ERR = None
_ROUTING_ERRORS = dict.fromkeys(
    ["offer for another upload", "chunk for another upload", "corrupt chunk for another upload"]
)
EXPECTED: dict[ReceiverState, dict[str, ReceiverState | None]] = {
    R.RECEIVING: dict.fromkeys(INPUTS, R.RECEIVING)
    | {"last chunk": R.VERIFIED, "timeout": R.DORMANT}
    | _ROUTING_ERRORS,
    R.DORMANT: dict.fromkeys(INPUTS, R.RECEIVING)
    | {
        "last chunk": R.VERIFIED,
        "offer over limit": R.DORMANT,
        "corrupt chunk": R.DORMANT,
        "early timeout": R.DORMANT,
        "timeout": R.DORMANT,
    }
    | _ROUTING_ERRORS,
    R.VERIFIED: dict.fromkeys(INPUTS, R.VERIFIED) | _ROUTING_ERRORS,
}


@pytest.mark.parametrize("state", list(ReceiverState))
@pytest.mark.parametrize("name", list(INPUTS))
def test_every_state_and_input(state: ReceiverState, name: str) -> None:
    receiver = _in_state(state)
    expected = EXPECTED[state][name]
    if expected is ERR:
        with pytest.raises(LocalProtocolError):
            INPUTS[name](receiver)
        assert receiver.state is state
        return
    INPUTS[name](receiver)
    assert receiver.state is expected


def test_the_table_lists_every_pair() -> None:
    assert set(RECEIVER_TRANSITIONS) == {(s, i) for s in ReceiverState for i in ReceiverInput}


@given(
    order=st.permutations(range(5)),
    repeats=st.lists(st.integers(min_value=0, max_value=4), max_size=6),
)
def test_any_arrival_order_ends_verified_with_exact_bytes(
    order: list[int], repeats: list[int]
) -> None:
    config = ReceiverConfig(max_chunk_size=64, max_window=8)
    data = segment_bytes(20)
    offer = offer_for(data, chunk_size=4, window=8)
    receiver = UploadReceiver(offer, config)
    receiver.receive_offer(offer, 0.0)
    stored = bytearray()
    for index in [*order, *repeats]:
        for action in receiver.receive_chunk(piece(index * 4, data=data), 0.0):
            if isinstance(action, WriteData):
                assert action.offset == len(stored)
                stored += action.data
    assert receiver.state is ReceiverState.VERIFIED
    assert stored == data


@given(
    pieces=st.lists(
        st.tuples(st.integers(min_value=0, max_value=39), st.integers(min_value=1, max_value=12)),
        max_size=40,
    )
)
def test_arbitrary_pieces_only_ever_extend_a_correct_prefix(
    pieces: list[tuple[int, int]],
) -> None:
    # Chunks cut by different senders (sizes change across restarts) overlap, repeat and arrive
    # in any order; the committed prefix must only ever grow with the right bytes.
    data = segment_bytes(40)
    offer = offer_for(data, chunk_size=4, window=8)
    receiver = UploadReceiver(offer, ReceiverConfig(max_chunk_size=64, max_window=8))
    receiver.receive_offer(offer, 0.0)
    stored = bytearray()
    for offset, length in [*pieces, (0, 40)]:
        end = min(offset + length, 40)
        for action in receiver.receive_chunk(
            Chunk(receiver.upload_id, offset, data[offset:end]), 0
        ):
            if isinstance(action, WriteData):
                assert action.offset == len(stored)
                stored += action.data
                assert stored == data[: len(stored)]
        assert receiver.buffered_bytes <= 32
    assert receiver.state is ReceiverState.VERIFIED
    assert stored == data
