"""The JSON control messages of the resumable upload: ``Offer`` (device -> receiver) and ``Ack``
(receiver -> device).

An offer names the segment by its signed manifest (which carries the size and SHA-256) and states
how the device will cut and pace it. Re-sending the same offer is also how a device asks "how far
did you get?" after a restart or a silence (tus-style resume), so there is no separate query
message. Every ack carries the receiver's durably committed prefix, so any one ack is enough to
resume from.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias, cast

import msgspec

from protocol.ids import Sha256Hex
from protocol.jsoncodec import MAX_JSON_MESSAGE_BYTES, decode_json, encode_checked
from protocol.manifest import SignedManifest
from protocol.upload.chunk import MAX_CHUNK_DATA

UPLOAD_VERSION: Final = 1
MAX_WINDOW: Final = 1024
"""Largest ``window`` an offer may state; receivers may honour less (see ``ReceiverConfig``)."""

UploadId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
"""32 lowercase hex characters: the first 16 bytes of SHA-256 over the signed manifest bytes."""
MAX_BYTE_COUNT: Final = 2**53 - 1
"""Largest byte count in JSON: every JSON parser (including JavaScript's) reads it exactly."""
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTE_COUNT)]
ChunkSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_DATA)]
Window = Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW)]
ReasonCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}\Z")]
HumanText = Annotated[str, msgspec.Meta(max_length=500)]

AckState = Literal["receiving", "verified", "rejected", "failed", "unknown"]
"""``receiving``: in progress, ``committed`` bytes are durable. ``verified``: the whole segment is
stored and its size and SHA-256 match the manifest: the device may delete its copy. ``rejected``:
permanent, never retry this offer. ``failed``: transient, retry later. ``unknown``: the receiver
has no record of this upload; the device must offer again."""
InReplyTo = Literal["offer", "chunk"]

# Reason codes. "rejected" codes are permanent: the same offer will be refused again.
CODE_BAD_SIGNATURE: Final = "bad_signature"
CODE_UNKNOWN_DEVICE: Final = "unknown_device"
CODE_UPLOAD_ID_MISMATCH: Final = "upload_id_mismatch"
CODE_BAD_MANIFEST: Final = "bad_manifest"
CODE_TOO_LARGE: Final = "too_large"
CODE_BAD_CHUNK_SIZE: Final = "bad_chunk_size"
# "failed" codes are transient: the device retries later with a fresh offer.
CODE_HASH_MISMATCH: Final = "hash_mismatch"
CODE_STORAGE_FULL: Final = "storage_full"
CODE_STORAGE_ERROR: Final = "storage_error"
CODE_BUSY: Final = "busy"
# Sender-local outcome code (never on the wire): no useful answer after the allowed retries.
CODE_NO_ANSWER: Final = "no_answer"


class Offer(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
    tag="offer",
):
    """Device -> receiver: "I have this segment; here is how I will send it; where do I start?"

    ``upload_id`` must equal ``signed_manifest.upload_id()``; ``chunk_size`` is the data bytes per
    chunk (the last chunk may be shorter); ``window`` is the most chunks the device sends beyond
    the receiver's last acknowledged ``committed`` offset.
    """

    v: Literal[1] = 1
    upload_id: UploadId
    signed_manifest: SignedManifest
    chunk_size: ChunkSize
    window: Window


class Ack(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
    tag="ack",
):
    """Receiver -> device: the state of an upload and its durably committed prefix in bytes.

    ``sha256`` is present exactly when ``state`` is ``verified``: it is the digest the receiver
    computed over the stored file, so the device can check it against its manifest before it
    deletes anything.
    """

    v: Literal[1] = 1
    upload_id: UploadId
    state: AckState
    committed: ByteCount
    in_reply_to: InReplyTo
    sha256: Sha256Hex | None = None
    code: ReasonCode | None = None
    message: HumanText | None = None

    def __post_init__(self) -> None:
        # ValueError here becomes a DecodeError when decoding, naming the rule.
        if (self.state == "verified") != (self.sha256 is not None):
            raise ValueError("sha256 must be present exactly when state is 'verified'")


UploadControl: TypeAlias = Offer | Ack


def make_offer(signed_manifest: SignedManifest, *, chunk_size: int, window: int) -> Offer:
    """The offer for ``signed_manifest``, with its upload ID computed from the signed bytes."""
    return Offer(
        upload_id=signed_manifest.upload_id(),
        signed_manifest=signed_manifest,
        chunk_size=chunk_size,
        window=window,
    )


def encode_control(message: UploadControl) -> bytes:
    """Encode an offer or ack as compact JSON; ``LocalProtocolError`` if a field is invalid."""
    return encode_checked(message)


def decode_upload_control(data: bytes | str) -> UploadControl:
    """Decode an offer or an ack by its ``type`` field; ``DecodeError`` names the bad field."""
    # decode_json is typed for classes; a union of tagged structs is decoded the same way.
    union = cast("type[UploadControl]", UploadControl)
    return decode_json(data, union, max_bytes=MAX_JSON_MESSAGE_BYTES)


def decode_offer(data: bytes | str) -> Offer:
    """Decode an offer (the payload of the ``upload/offer`` topic)."""
    return decode_json(data, Offer, max_bytes=MAX_JSON_MESSAGE_BYTES)


def decode_ack(data: bytes | str) -> Ack:
    """Decode an ack (the payload of the ``upload/ack`` topic)."""
    return decode_json(data, Ack, max_bytes=MAX_JSON_MESSAGE_BYTES)


def rejected_ack(upload_id: str, code: str, message: str | None = None) -> Ack:
    """A permanent refusal of an offer, for the receiver's shell (for example after a failed
    signature check: ``CODE_BAD_SIGNATURE``, ``CODE_UNKNOWN_DEVICE``)."""
    return Ack(
        upload_id=upload_id,
        state="rejected",
        committed=0,
        in_reply_to="offer",
        code=code,
        message=message,
    )


def failed_ack(
    upload_id: str,
    *,
    committed: int,
    code: str,
    in_reply_to: InReplyTo,
    message: str | None = None,
) -> Ack:
    """A transient failure (``CODE_STORAGE_FULL``, ``CODE_STORAGE_ERROR``, ``CODE_BUSY``...).

    ``committed`` must be what is durable now; the device gives up this attempt and retries later.
    """
    return Ack(
        upload_id=upload_id,
        state="failed",
        committed=committed,
        in_reply_to=in_reply_to,
        code=code,
        message=message,
    )


def unknown_ack(upload_id: str, *, in_reply_to: InReplyTo) -> Ack:
    """The answer to a chunk for an upload the receiver has no record of: "offer it again"."""
    return Ack(upload_id=upload_id, state="unknown", committed=0, in_reply_to=in_reply_to)
