"""One segment uploaded through the resumable-upload protocol over a simulated bad link.

The device side is an ``UploadSender``; the receiver side an ``UploadReceiver`` behind a minimal
in-memory shell that checks the manifest signature before accepting the offer, exactly as a real
receiver must. Everything runs in virtual time, deterministically for a seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from device.errors import EvidenceError
from device.signing import DeviceKey, verify_signed_manifest
from protocol.errors import DecodeError
from protocol.manifest import SegmentManifest, SignedManifest
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    CODE_BAD_SIGNATURE,
    Ack,
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
    rejected_ack,
    unknown_ack,
)
from sim.linksim import LinkProfile, LinkStats, SimulatedLink

TO_RECEIVER_OFFER = "receiver/offer"
TO_RECEIVER_CHUNK = "receiver/chunk"
DEMO_CHUNK_SIZE = 64 * 1024
"""Small enough that a short demo upload has many chunks for the lossy link to damage."""
TO_DEVICE = "device/ack"
MAX_VIRTUAL_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class DemoResult:
    """How the demo upload ended, and what it took."""

    result: UploadResult
    code: str | None
    size: int
    stored_identical: bool
    virtual_s: float
    link: LinkStats
    chunks_sent: int
    corrupt_chunks_refused: int


class _ReceiverShell:
    """The receiver's I/O edge, in memory: trust check, 'disk', verified flag."""

    def __init__(self, public_key: bytes, link: SimulatedLink) -> None:
        self._public_key = public_key
        self._link = link
        self.machine: UploadReceiver | None = None
        self.disk = bytearray()
        self.final = False
        self.corrupt_chunks = 0

    def on_offer(self, payload: bytes, now: float) -> None:
        try:
            offer = decode_offer(payload)
        except DecodeError:
            return  # an undecodable offer gets no answer; the sender re-offers
        if self.machine is None:
            rejection = self._admit(offer)
            if rejection is not None:
                self._send(encode_control(rejection), now)
                return
            self.machine = UploadReceiver(offer)
        self._apply(self.machine.receive_offer(offer, now), now)

    def on_chunk(self, payload: bytes, now: float) -> None:
        try:
            chunk = decode_chunk(payload)
        except ChunkCrcError as error:
            self.corrupt_chunks += 1
            if self.machine is not None:
                self.machine.receive_corrupt_chunk(error)
            return
        except DecodeError:
            return
        if self.machine is None:
            self._send(encode_control(unknown_ack(chunk.upload_id, in_reply_to="chunk")), now)
            return
        self._apply(self.machine.receive_chunk(chunk, now), now)

    def on_timeout(self, now: float) -> None:
        if self.machine is not None:
            self._apply(self.machine.handle_timeout(now), now)

    def _admit(self, offer: Offer) -> Ack | None:
        rejection = check_offer(offer, ReceiverConfig())
        if rejection is not None:
            return rejection
        try:
            verify_signed_manifest(offer.signed_manifest, self._public_key)
        except EvidenceError as exc:
            return rejected_ack(offer.upload_id, CODE_BAD_SIGNATURE, str(exc))
        return None

    def _apply(self, actions: list[ReceiverAction], now: float) -> None:
        for action in actions:
            if isinstance(action, WriteData):
                del self.disk[action.offset :]
                self.disk += action.data
            elif isinstance(action, Complete):
                self.final = True
            elif isinstance(action, Discard):
                self.disk.clear()
            elif isinstance(action, SendAck):
                self._send(encode_control(action.ack), now)

    def _send(self, payload: bytes, now: float) -> None:
        self._link.send(TO_DEVICE, payload, now)


def demo_segment(size: int, seed: int) -> bytes:
    """Deterministic segment bytes for the demo."""
    return random.Random(seed).randbytes(size)


def sign_demo_manifest(key: DeviceKey, data: bytes) -> SignedManifest:
    """A signed manifest describing ``data`` as segment 0 of a demo recording."""
    start = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
    manifest = SegmentManifest(
        device="demo-cam",
        recording="rec-demo",
        index=0,
        status="complete",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        records=1,
        start_utc=start,
        stop_utc=start,
        start_monotonic_s=0.0,
        stop_monotonic_s=0.0,
        clock_set=True,
        start_trigger="scenario",
        key_id=key.key_id,
    )
    return key.sign_manifest(manifest)


def run_upload_demo(
    *,
    size: int,
    profile: LinkProfile,
    seed: int,
    sender_config: SenderConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Upload ``size`` seeded bytes over a link with ``profile``; report how it ended."""
    data = demo_segment(size, seed)
    key = DeviceKey.from_seed(hashlib.sha256(f"demo-key:{seed}".encode()).digest())
    link = SimulatedLink(profile, seed=seed)
    config = sender_config or SenderConfig(chunk_size=DEMO_CHUNK_SIZE, ack_timeout_s=0.5)
    sender = UploadSender(
        sign_demo_manifest(key, data),
        max_message_size=config.chunk_size + CHUNK_HEADER_SIZE,
        config=config,
    )
    receiver = _ReceiverShell(key.public_bytes(), link)
    chunks = 0

    def apply(actions: list[SenderAction], now: float) -> Finished | None:
        nonlocal chunks
        for action in actions:
            if isinstance(action, SendOffer):
                link.send(TO_RECEIVER_OFFER, action.payload, now)
            elif isinstance(action, SendChunk):
                chunks += 1
                piece = data[action.offset : action.offset + action.length]
                link.send(
                    TO_RECEIVER_CHUNK, encode_chunk(action.upload_id, action.offset, piece), now
                )
            else:
                return action
        return None

    now = 0.0
    finished = apply(sender.start(now), now)
    while finished is None and now < MAX_VIRTUAL_S:
        now, finished = _step(link, sender, receiver, apply)
        if on_progress is not None:
            on_progress(sender.committed, size)
    if finished is None:
        finished = Finished(UploadResult.FAILED, "demo_timeout", "no outcome in a virtual day")
    return DemoResult(
        result=finished.result,
        code=finished.code,
        size=size,
        stored_identical=receiver.final and bytes(receiver.disk) == data,
        virtual_s=now,
        link=link.stats,
        chunks_sent=chunks,
        corrupt_chunks_refused=receiver.corrupt_chunks,
    )


def _step(
    link: SimulatedLink,
    sender: UploadSender,
    receiver: _ReceiverShell,
    apply: Callable[[list[SenderAction], float], Finished | None],
) -> tuple[float, Finished | None]:
    """Advance to the next delivery or deadline, whichever comes first, and handle it."""
    candidates = [
        moment
        for moment in (
            link.next_arrival(),
            sender.next_deadline(),
            receiver.machine.next_deadline() if receiver.machine else None,
        )
        if moment is not None
    ]
    if not candidates:
        return MAX_VIRTUAL_S, Finished(UploadResult.FAILED, "stalled", "nothing left to happen")
    now = min(candidates)
    if link.next_arrival() == now:
        _, destination, payload = link.pop()
        if destination == TO_RECEIVER_OFFER:
            receiver.on_offer(payload, now)
        elif destination == TO_RECEIVER_CHUNK:
            receiver.on_chunk(payload, now)
        else:
            try:
                ack = decode_ack(payload)
            except DecodeError:
                return now, None
            return now, apply(sender.receive_ack(ack, now), now)
        return now, None
    receiver.on_timeout(now)
    deadline = sender.next_deadline()
    if deadline is not None and deadline <= now:
        return now, apply(sender.handle_timeout(now), now)
    return now, None
