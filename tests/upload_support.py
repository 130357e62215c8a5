"""Builders shared by the upload tests (no tests here; named to sit with the files it serves).

Signatures are placeholders: the upload protocol carries the signed manifest but never verifies
it (the receiver's shell does, against its trust store), so these tests need no keys.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from protocol.manifest import SegmentManifest, SignedManifest, encode_manifest
from protocol.upload import (
    Ack,
    InReplyTo,
    Offer,
    ReceiverConfig,
    SenderConfig,
    UploadReceiver,
    UploadSender,
    make_offer,
)

KEY_ID = "0123456789abcdef"
FAKE_SIGNATURE = "ab" * 64

SMALL_SENDER = SenderConfig(
    chunk_size=4, window=2, ack_timeout_s=1.0, max_retries=2, min_chunk_size=1
)
"""A sender cutting 4-byte chunks, two in flight, so every path shows up in a few bytes."""
SMALL_RECEIVER = ReceiverConfig(
    max_chunk_size=64, max_size=10_000, max_window=8, idle_timeout_s=5.0
)
MAX_MESSAGE = 1 << 20


def segment_bytes(size: int, *, seed: int = 0) -> bytes:
    """Deterministic segment content of ``size`` bytes (cheap, distinct per seed)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def signed_manifest_for(
    data: bytes, *, index: int = 0, key_id: str = KEY_ID, envelope_key_id: str = KEY_ID
) -> SignedManifest:
    """A signed manifest (with a placeholder signature) describing ``data``."""
    manifest = SegmentManifest(
        device="cam-1",
        recording="rec-000001",
        index=index,
        status="complete",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        records=1,
        start_utc=datetime(2026, 11, 29, 14, 0, tzinfo=UTC),
        stop_utc=datetime(2026, 11, 29, 14, 5, tzinfo=UTC),
        start_monotonic_s=10.0,
        stop_monotonic_s=310.0,
        clock_set=True,
        start_trigger="button",
        key_id=key_id,
    )
    return SignedManifest(
        manifest=encode_manifest(manifest).decode(),
        signature=FAKE_SIGNATURE,
        key_id=envelope_key_id,
    )


def offer_for(data: bytes, *, chunk_size: int = 4, window: int = 2) -> Offer:
    """A valid offer for ``data``."""
    return make_offer(signed_manifest_for(data), chunk_size=chunk_size, window=window)


def new_sender(data: bytes, config: SenderConfig = SMALL_SENDER) -> UploadSender:
    """A sender for ``data`` with a generous message limit."""
    return UploadSender(signed_manifest_for(data), max_message_size=MAX_MESSAGE, config=config)


def new_receiver(data: bytes, config: ReceiverConfig = SMALL_RECEIVER) -> UploadReceiver:
    """A fresh receiver for the offer ``offer_for(data)`` would make."""
    return UploadReceiver(offer_for(data), config)


def receiving_ack(upload_id: str, committed: int, *, in_reply_to: InReplyTo = "chunk") -> Ack:
    """A ``receiving`` ack."""
    return Ack(upload_id=upload_id, state="receiving", committed=committed, in_reply_to=in_reply_to)


def verified_ack(data: bytes, upload_id: str, *, in_reply_to: InReplyTo = "chunk") -> Ack:
    """The ``verified`` ack a correct receiver sends for ``data``."""
    return Ack(
        upload_id=upload_id,
        state="verified",
        committed=len(data),
        in_reply_to=in_reply_to,
        sha256=hashlib.sha256(data).hexdigest(),
    )
