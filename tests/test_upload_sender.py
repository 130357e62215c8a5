"""The device side of the upload: ``UploadSender`` on its own, driven by hand-made acks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.manifest import SignedManifest
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    CODE_NO_ANSWER,
    SENDER_TRANSITIONS,
    Ack,
    Finished,
    ReceiverConfig,
    SendAck,
    SendChunk,
    SenderAction,
    SenderConfig,
    SenderInput,
    SenderState,
    SendOffer,
    UploadReceiver,
    UploadResult,
    UploadSender,
    WriteData,
    decode_chunk,
    decode_offer,
    effective_chunk_size,
    encode_chunk,
    failed_ack,
    rejected_ack,
    unknown_ack,
)
from tests.upload_support import (
    SMALL_SENDER,
    new_sender,
    receiving_ack,
    segment_bytes,
    signed_manifest_for,
    verified_ack,
)

DATA = segment_bytes(20)  # five 4-byte chunks; two in flight at a time


def chunks(actions: list[SenderAction]) -> list[tuple[int, int]]:
    """The (offset, length) of every SendChunk, in order."""
    return [(a.offset, a.length) for a in actions if isinstance(a, SendChunk)]


def sending(data: bytes = DATA) -> UploadSender:
    sender = new_sender(data)
    sender.start(0.0)
    sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), 0.0)
    return sender


# -- happy path and flow control -----------------------------------------------------------


def test_start_sends_the_offer_and_arms_the_timer() -> None:
    sender = new_sender(DATA)
    assert (sender.state, sender.next_deadline()) == (SenderState.IDLE, None)
    [action] = sender.start(5.0)
    assert isinstance(action, SendOffer)
    assert decode_offer(action.payload) == action.offer
    assert action.offer.upload_id == sender.upload_id == signed_manifest_for(DATA).upload_id()
    assert (action.offer.chunk_size, action.offer.window) == (4, 2)
    assert sender.state is SenderState.OFFERING
    assert sender.next_deadline() == 6.0


def test_offer_reply_opens_the_window() -> None:
    sender = new_sender(DATA)
    sender.start(0.0)
    actions = sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), 0.5)
    assert chunks(actions) == [(0, 4), (4, 4)]
    assert sender.state is SenderState.SENDING
    assert sender.next_deadline() == 1.5


def test_cumulative_acks_slide_the_window_and_the_last_chunk_is_short() -> None:
    data = segment_bytes(10)
    sender = sending(data)
    assert chunks(sender.receive_ack(receiving_ack(sender.upload_id, 4), 1.0)) == [(8, 2)]
    assert (sender.state, sender.next_offset) == (SenderState.AWAITING_VERIFY, 10)
    [done] = sender.receive_ack(verified_ack(data, sender.upload_id), 1.1)
    assert done == Finished(UploadResult.VERIFIED)
    assert sender.state is SenderState.VERIFIED
    assert sender.committed == 10
    assert sender.next_deadline() is None


def test_acks_never_move_committed_backwards() -> None:
    sender = sending()
    sender.receive_ack(receiving_ack(sender.upload_id, 8), 0.1)
    assert sender.receive_ack(receiving_ack(sender.upload_id, 4), 0.2) == []
    assert sender.receive_ack(receiving_ack(sender.upload_id, 8), 0.2) == []
    # An offer reply while sending is just another (possibly stale) cumulative ack.
    assert sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), 0.3) == []
    assert sender.committed == 8


def test_an_ack_past_what_was_sent_is_taken() -> None:
    # A receiver that kept data from an earlier attempt may be ahead of this sender's view.
    sender = sending()
    assert chunks(sender.receive_ack(receiving_ack(sender.upload_id, 12), 0.1)) == [
        (12, 4),
        (16, 4),
    ]
    assert sender.next_offset == 20


def test_offer_reply_is_authoritative_even_when_lower() -> None:
    sender = sending()
    sender.receive_ack(receiving_ack(sender.upload_id, 8), 0.1)
    [offer] = sender.receive_ack(unknown_ack(sender.upload_id, in_reply_to="chunk"), 0.2)
    assert isinstance(offer, SendOffer)
    assert (sender.state, sender.committed) == (SenderState.OFFERING, 0)
    actions = sender.receive_ack(receiving_ack(sender.upload_id, 4, in_reply_to="offer"), 0.3)
    assert chunks(actions) == [(4, 4), (8, 4)]


def test_chunk_acks_while_offering_are_stale() -> None:
    sender = new_sender(DATA)
    sender.start(0.0)
    assert sender.receive_ack(receiving_ack(sender.upload_id, 8), 0.1) == []
    assert sender.receive_ack(unknown_ack(sender.upload_id, in_reply_to="chunk"), 0.1) == []
    assert sender.state is SenderState.OFFERING


def test_acks_for_other_uploads_are_ignored() -> None:
    sender = sending()
    other = signed_manifest_for(b"other").upload_id()
    assert sender.receive_ack(verified_ack(b"other", other), 0.1) == []
    assert sender.receive_ack(rejected_ack(other, "bad_signature"), 0.1) == []
    assert sender.state is SenderState.SENDING


# -- endings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ack", "result"),
    [
        (lambda uid: rejected_ack(uid, "too_large", "no"), UploadResult.REJECTED),
        (
            lambda uid: failed_ack(uid, committed=4, code="storage_full", in_reply_to="chunk"),
            UploadResult.FAILED,
        ),
    ],
)
def test_rejected_and_failed_end_the_attempt(
    ack: Callable[[str], Ack], result: UploadResult
) -> None:
    sender = sending()
    message = ack(sender.upload_id)
    [done] = sender.receive_ack(message, 0.1)
    assert done == Finished(result, message.code, message.message)
    assert sender.outcome == done
    assert sender.state.value == result.value
    assert sender.next_deadline() is None
    assert sender.receive_ack(verified_ack(DATA, sender.upload_id), 0.2) == []
    assert sender.handle_timeout(100.0) == []


def test_impossible_acks_are_remote_errors_and_change_nothing() -> None:
    sender = sending()
    uid = sender.upload_id
    wrong_hash = msgspec.structs.replace(verified_ack(DATA, uid), sha256="0" * 64)
    short = msgspec.structs.replace(verified_ack(DATA, uid), committed=19)
    for ack in (receiving_ack(uid, 21), wrong_hash, short):
        with pytest.raises(RemoteProtocolError):
            sender.receive_ack(ack, 0.1)
    assert (sender.state, sender.committed) == (SenderState.SENDING, 0)


def test_empty_segment_is_verified_by_the_offer_reply() -> None:
    sender = new_sender(b"")
    sender.start(0.0)
    [done] = sender.receive_ack(verified_ack(b"", sender.upload_id, in_reply_to="offer"), 0.1)
    assert done == Finished(UploadResult.VERIFIED)


def test_complete_but_unverified_asks_again_with_an_offer() -> None:
    # A non-conforming receiver answers "receiving" with everything committed: only an offer
    # can ask it for a verdict.
    sender = new_sender(b"")
    sender.start(0.0)
    assert sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), 0.1) == []
    assert (sender.state, sender.committed) == (SenderState.AWAITING_VERIFY, 0)
    [offer] = sender.handle_timeout(1.1)
    assert isinstance(offer, SendOffer)
    assert sender.state is SenderState.OFFERING


# -- timeouts ------------------------------------------------------------------------------


def test_timeout_goes_back_to_committed() -> None:
    sender = sending()
    sender.receive_ack(receiving_ack(sender.upload_id, 4), 0.5)  # sent up to 12
    assert sender.handle_timeout(1.4) == []  # early: nothing
    assert chunks(sender.handle_timeout(1.5)) == [(4, 4), (8, 4)]
    assert sender.next_deadline() == 2.5


def test_offer_is_resent_on_timeout() -> None:
    sender = new_sender(DATA)
    sender.start(0.0)
    [again] = sender.handle_timeout(1.0)
    assert isinstance(again, SendOffer)
    assert sender.next_deadline() == 2.0


def test_max_retries_timeouts_without_progress_fail_the_attempt() -> None:
    sender = sending()  # max_retries=2: two resends, then failure
    assert chunks(sender.handle_timeout(1.0)) == [(0, 4), (4, 4)]  # first: go-back-N
    sender.receive_ack(receiving_ack(sender.upload_id, 4), 1.5)  # progress resets the count
    assert chunks(sender.handle_timeout(2.5)) == [(4, 4), (8, 4)]
    [offer] = sender.handle_timeout(3.5)  # second in a row: ask with an offer
    assert isinstance(offer, SendOffer)
    [done] = sender.handle_timeout(4.5)
    assert isinstance(done, Finished)
    assert (done.result, done.code) == (UploadResult.FAILED, CODE_NO_ANSWER)
    assert sender.state is SenderState.FAILED


def test_second_silence_reoffers_and_recovers_a_receiver_that_went_back() -> None:
    # The receiver restarted from zero (say, a hash mismatch whose "failed" ack was lost):
    # its chunk acks look stale, but the answer to the offer is authoritative.
    sender = sending()
    sender.receive_ack(receiving_ack(sender.upload_id, 12), 0.5)
    assert sender.receive_ack(receiving_ack(sender.upload_id, 0), 0.6) == []
    assert chunks(sender.handle_timeout(1.5)) == [(12, 4), (16, 4)]
    [offer] = sender.handle_timeout(2.5)
    assert isinstance(offer, SendOffer)
    actions = sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), 2.6)
    assert chunks(actions) == [(0, 4), (4, 4)]
    assert sender.committed == 0


def test_answered_offers_without_chunk_progress_still_fail() -> None:
    # Offers get through but chunks never do (e.g. above the broker's packet limit): the offer
    # replies are no progress, so the attempt ends instead of looping forever.
    sender = sending()
    now = 0.0
    for _ in range(10):
        now += 1.0
        for action in sender.handle_timeout(now):
            if isinstance(action, SendOffer):
                sender.receive_ack(receiving_ack(sender.upload_id, 0, in_reply_to="offer"), now)
        if sender.state is SenderState.FAILED:
            break
    outcome = sender.outcome
    assert outcome is not None
    assert (outcome.result, outcome.code) == (UploadResult.FAILED, CODE_NO_ANSWER)
    assert now == 3.0  # max_retries=2: go-back-N, re-offer, then the end


def test_zero_retries_fail_on_the_first_timeout() -> None:
    sender = new_sender(DATA, dataclasses.replace(SMALL_SENDER, max_retries=0))
    sender.start(0.0)
    [done] = sender.handle_timeout(1.0)
    assert isinstance(done, Finished)
    assert done.result is UploadResult.FAILED


# -- construction and misuse ---------------------------------------------------------------


def test_start_twice_and_ack_before_start_are_local_errors() -> None:
    sender = new_sender(DATA)
    with pytest.raises(LocalProtocolError, match="ack is not allowed in state IDLE"):
        sender.receive_ack(receiving_ack(sender.upload_id, 0), 0.0)
    sender.start(0.0)
    with pytest.raises(LocalProtocolError, match="start is not allowed"):
        sender.start(0.0)


def test_chunk_size_is_capped_by_the_message_limit() -> None:
    config = SenderConfig(chunk_size=4096, min_chunk_size=100)
    assert effective_chunk_size(config, 10_000) == 4096
    assert effective_chunk_size(config, 1000) == 1000 - CHUNK_HEADER_SIZE
    with pytest.raises(LocalProtocolError, match="below min_chunk_size"):
        effective_chunk_size(config, CHUNK_HEADER_SIZE + 99)


def test_offer_must_fit_the_message_limit() -> None:
    with pytest.raises(LocalProtocolError, match="the offer is"):
        UploadSender(signed_manifest_for(DATA), max_message_size=200, config=SMALL_SENDER)


def test_invalid_manifest_is_refused() -> None:
    broken = SignedManifest(manifest="{}", signature="ab" * 64, key_id="0123456789abcdef")
    with pytest.raises(LocalProtocolError, match="invalid manifest"):
        UploadSender(broken, max_message_size=10_000)


@pytest.mark.parametrize(
    "changes",
    [
        {"chunk_size": 0},
        {"chunk_size": 2**32},
        {"min_chunk_size": 10, "chunk_size": 5},
        {"window": 0},
        {"window": 1025},
        {"ack_timeout_s": 0.0},
        {"max_retries": -1},
    ],
)
def test_config_is_validated(changes: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        SenderConfig(**changes)  # type: ignore[arg-type]


@given(
    size=st.integers(min_value=0, max_value=5000),
    chunk_size=st.integers(min_value=1, max_value=3000),
    spare=st.integers(min_value=0, max_value=2000),
    window=st.integers(min_value=1, max_value=8),
)
@settings(max_examples=50)
def test_no_message_exceeds_max_message_size(
    size: int, chunk_size: int, spare: int, window: int
) -> None:
    data = segment_bytes(size)
    manifest = signed_manifest_for(data)
    config = SenderConfig(chunk_size=chunk_size, window=window, min_chunk_size=1)
    [probe] = UploadSender(manifest, max_message_size=10**6, config=config).start(0.0)
    assert isinstance(probe, SendOffer)
    limit = len(probe.payload) + spare
    sender = UploadSender(manifest, max_message_size=limit, config=config)
    receiver = UploadReceiver(probe.offer, ReceiverConfig(max_chunk_size=3000))
    stored = bytearray()
    pending = sender.start(0.0)
    while pending:
        action = pending.pop(0)
        if isinstance(action, SendOffer):
            assert len(action.payload) <= limit
            replies = receiver.receive_offer(action.offer, 0.0)
        elif isinstance(action, SendChunk):
            piece = data[action.offset : action.offset + action.length]
            message = encode_chunk(action.upload_id, action.offset, piece)
            assert len(message) <= limit
            replies = receiver.receive_chunk(decode_chunk(message), 0.0)
        else:
            assert action == Finished(UploadResult.VERIFIED)
            replies = []
        for reply in replies:
            if isinstance(reply, WriteData):
                stored += reply.data
            elif isinstance(reply, SendAck):
                pending += sender.receive_ack(reply.ack, 0.0)
    assert sender.state is SenderState.VERIFIED
    assert stored == data


# -- every (state, input) pair ---------------------------------------------------------------

S = SenderState


def _in_state(state: SenderState) -> UploadSender:
    """A sender for DATA (20 bytes) or, for AWAITING_VERIFY, for the first 6 bytes of it."""
    if state is S.AWAITING_VERIFY:
        sender = sending(DATA[:6])
    elif state is S.IDLE:
        sender = new_sender(DATA)
    elif state is S.OFFERING:
        sender = new_sender(DATA)
        sender.start(0.0)
    else:
        sender = sending()
    ends = {
        S.VERIFIED: verified_ack(DATA, sender.upload_id),
        S.REJECTED: rejected_ack(sender.upload_id, "too_large"),
        S.FAILED: failed_ack(sender.upload_id, committed=0, code="busy", in_reply_to="chunk"),
    }
    if state in ends:
        sender.receive_ack(ends[state], 0.0)
    assert sender.state is state
    return sender


def _data_for(sender: UploadSender) -> bytes:
    return DATA[: sender.size]


INPUTS: dict[str, Callable[[UploadSender], list[SenderAction]]] = {
    "start": lambda s: s.start(0.5),
    "offer reply 0": lambda s: s.receive_ack(
        receiving_ack(s.upload_id, 0, in_reply_to="offer"), 0.5
    ),
    "offer reply 4": lambda s: s.receive_ack(
        receiving_ack(s.upload_id, 4, in_reply_to="offer"), 0.5
    ),
    "chunk ack 0": lambda s: s.receive_ack(receiving_ack(s.upload_id, 0), 0.5),
    "chunk ack 4": lambda s: s.receive_ack(receiving_ack(s.upload_id, 4), 0.5),
    "verified": lambda s: s.receive_ack(verified_ack(_data_for(s), s.upload_id), 0.5),
    "rejected": lambda s: s.receive_ack(rejected_ack(s.upload_id, "bad_signature"), 0.5),
    "failed": lambda s: s.receive_ack(
        failed_ack(s.upload_id, committed=0, code="storage_full", in_reply_to="chunk"), 0.5
    ),
    "unknown": lambda s: s.receive_ack(unknown_ack(s.upload_id, in_reply_to="chunk"), 0.5),
    "foreign ack": lambda s: s.receive_ack(verified_ack(b"x", "f" * 32), 0.5),
    "early timeout": lambda s: s.handle_timeout(0.5),
    "timeout": lambda s: s.handle_timeout(1.0),
}

ERR = None  # LocalProtocolError
_ACKS_WHILE_LIVE = {
    "verified": S.VERIFIED,
    "rejected": S.REJECTED,
    "failed": S.FAILED,
    "unknown": S.OFFERING,
}


def _all(value: SenderState | None) -> dict[str, SenderState | None]:
    return dict.fromkeys(INPUTS, value)


EXPECTED: dict[SenderState, dict[str, SenderState | None]] = {
    S.IDLE: _all(ERR) | {"start": S.OFFERING, "early timeout": S.IDLE, "timeout": S.IDLE},
    S.OFFERING: _all(S.OFFERING)
    | _ACKS_WHILE_LIVE
    | {"start": ERR, "offer reply 0": S.SENDING, "offer reply 4": S.SENDING},
    S.SENDING: _all(S.SENDING) | _ACKS_WHILE_LIVE | {"start": ERR},
    S.AWAITING_VERIFY: _all(S.AWAITING_VERIFY) | _ACKS_WHILE_LIVE | {"start": ERR},
    **{done: _all(done) | {"start": ERR} for done in (S.VERIFIED, S.REJECTED, S.FAILED)},
}


@pytest.mark.parametrize("state", list(SenderState))
@pytest.mark.parametrize("name", list(INPUTS))
def test_every_state_and_input(state: SenderState, name: str) -> None:
    sender = _in_state(state)
    expected = EXPECTED[state][name]
    if expected is ERR:
        with pytest.raises(LocalProtocolError):
            INPUTS[name](sender)
        assert sender.state is state
        return
    INPUTS[name](sender)
    assert sender.state is expected


def test_the_table_covers_every_state() -> None:
    assert set(EXPECTED) == set(SenderState)
    listed = {state for state, _ in SENDER_TRANSITIONS}
    assert listed == set(SenderState)
    assert (S.IDLE, SenderInput.ACK) not in SENDER_TRANSITIONS


ack_inputs = st.sampled_from([name for name in INPUTS if name != "start"])


@given(steps=st.lists(st.sampled_from(list(INPUTS)), max_size=30))
def test_random_input_sequences_follow_the_table(steps: list[str]) -> None:
    # After h2: whatever the order, each input is a listed transition or a LocalProtocolError.
    sender = new_sender(DATA)
    now = 0.0
    for name in steps:
        before = sender.state
        what = SenderInput.START if name == "start" else SenderInput.TIMEOUT
        if name not in ("start", "early timeout", "timeout"):
            what = SenderInput.ACK
        try:
            INPUTS[name](sender)
        except LocalProtocolError:
            assert (before, what) not in SENDER_TRANSITIONS
            assert sender.state is before
        else:
            assert sender.state in SENDER_TRANSITIONS[before, what]
        now += 1.0
        sender.handle_timeout(now)
