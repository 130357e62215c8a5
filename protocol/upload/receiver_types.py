"""What surrounds ``UploadReceiver``: its limits, actions and counters, and ``check_offer``.

Trust (is the device known, is the signature valid) is the shell's job, done before
``check_offer``; ``check_offer`` holds the checks any correct receiver makes whatever its trust
store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from protocol.errors import DecodeError, LocalProtocolError
from protocol.upload.chunk import MAX_CHUNK_DATA
from protocol.upload.wire import (
    CODE_BAD_CHUNK_SIZE,
    CODE_BAD_MANIFEST,
    CODE_TOO_LARGE,
    CODE_UPLOAD_ID_MISMATCH,
    MAX_BYTE_COUNT,
    MAX_WINDOW,
    Ack,
    Offer,
    rejected_ack,
)


class Hasher(Protocol):
    """The part of ``hashlib.sha256()`` the receiver uses."""

    def update(self, data: bytes, /) -> None:
        """Feed bytes."""

    def hexdigest(self) -> str:
        """The digest so far, as lowercase hex."""


@dataclass(frozen=True, slots=True)
class WriteData:
    """Append ``data`` at ``offset`` (always the previous committed length) and fsync it."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Complete:
    """Every byte is durable and matches the manifest's ``sha256``: make the file final."""

    sha256: str


@dataclass(frozen=True, slots=True)
class Discard:
    """The complete file did not match its manifest: truncate it to zero bytes."""


@dataclass(frozen=True, slots=True)
class SendAck:
    """Publish ``encode_control(ack)`` to the device."""

    ack: Ack


ReceiverAction: TypeAlias = WriteData | Complete | Discard | SendAck


@dataclass(slots=True)
class ReceiverStats:
    """Counters for one upload (a snapshot copy is returned by ``UploadReceiver.stats``)."""

    offers: int = 0
    chunks: int = 0  # valid chunks received, including every kind below
    duplicates: int = 0  # nothing new: already committed or already held
    overlaps: int = 0  # started below committed; only the new tail was committed
    out_of_order: int = 0  # held in the buffer ahead of a gap
    beyond_window: int = 0  # ahead of a gap and outside the buffer's bound: dropped
    corrupt_chunks: int = 0  # failed the CRC; never committed
    hash_mismatches: int = 0


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """Receiver limits, validated once. Sizes in bytes, times in seconds.

    Out-of-order memory per upload is at most ``min(offer.window, max_window) * chunk_size``.
    """

    max_chunk_size: int = 1024 * 1024
    max_size: int = 4 * 1024**3
    max_window: int = 64
    idle_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_chunk_size <= MAX_CHUNK_DATA:
            raise LocalProtocolError(f"max_chunk_size must be 1 to {MAX_CHUNK_DATA}")
        if not 0 <= self.max_size <= MAX_BYTE_COUNT:
            raise LocalProtocolError(f"max_size must be 0 to {MAX_BYTE_COUNT}")
        if not 1 <= self.max_window <= MAX_WINDOW:
            raise LocalProtocolError(f"max_window must be 1 to {MAX_WINDOW}")
        if not self.idle_timeout_s > 0:
            raise LocalProtocolError("idle_timeout_s must be > 0")


def check_offer(offer: Offer, config: ReceiverConfig) -> Ack | None:
    """The permanent ``rejected`` ack for an offer this receiver will never take, else ``None``.

    Codes: ``upload_id_mismatch`` (the ID is not derived from the signed manifest: tampered or
    buggy), ``bad_manifest`` (the signed bytes are not a valid manifest, or its ``key_id``
    differs from the envelope's), ``too_large`` (size above ``max_size``), ``bad_chunk_size``
    (``chunk_size`` above ``max_chunk_size``). A ``window`` above ``max_window`` is not refused:
    the receiver holds fewer chunks out of order and the device's retransmission covers the rest.
    """
    expected = offer.signed_manifest.upload_id()
    if offer.upload_id != expected:
        return rejected_ack(
            offer.upload_id,
            CODE_UPLOAD_ID_MISMATCH,
            f"upload_id must be {expected}, the first 32 hex digits of sha256(manifest)",
        )
    try:
        manifest = offer.signed_manifest.decode()
    except DecodeError as exc:
        return rejected_ack(offer.upload_id, CODE_BAD_MANIFEST, str(exc)[:500])
    if manifest.key_id != offer.signed_manifest.key_id:
        return rejected_ack(
            offer.upload_id, CODE_BAD_MANIFEST, "manifest and envelope key_id differ"
        )
    if manifest.size > config.max_size:
        text = f"size {manifest.size} exceeds this receiver's limit of {config.max_size} bytes"
        return rejected_ack(offer.upload_id, CODE_TOO_LARGE, text)
    if offer.chunk_size > config.max_chunk_size:
        text = (
            f"chunk_size {offer.chunk_size} exceeds this receiver's limit of "
            f"{config.max_chunk_size} bytes"
        )
        return rejected_ack(offer.upload_id, CODE_BAD_CHUNK_SIZE, text)
    return None
