"""Segment manifests and their signed envelope.

A manifest describes one closed segment of a recording: who recorded it, when, why, and the size
and SHA-256 of its bytes. The device signs the manifest's exact JSON bytes with its Ed25519 key;
the envelope carries those bytes as a JSON string, so a verifier checks the signature over
``manifest.encode("utf-8")`` without re-serialising anything (no canonical-JSON rules to agree on).
Signing and verifying live outside this package; here are only the formats.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final, Literal

import msgspec

from protocol.ids import SafeId, Sha256Hex, UtcTime
from protocol.jsoncodec import MAX_JSON_MESSAGE_BYTES, decode_json, encode_checked

MANIFEST_SCHEMA_VERSION: Final = 1

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0.0)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
SignatureHex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{128}\Z")]
KeyId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}\Z")]

SegmentStatus = Literal["complete", "recovered"]
"""``complete``: closed normally. ``recovered``: closed after a crash from its complete records."""


class SegmentManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a closed segment is. Field units are in the names; times are UTC."""

    v: Literal[1] = 1
    device: SafeId
    recording: SafeId
    index: NonNegativeInt
    status: SegmentStatus
    size: NonNegativeInt
    sha256: Sha256Hex
    records: NonNegativeInt
    start_utc: UtcTime
    stop_utc: UtcTime
    start_monotonic_s: NonNegativeFloat
    stop_monotonic_s: NonNegativeFloat
    clock_set: bool
    start_trigger: Label
    stop_trigger: Label | None = None
    stop_reason: Label | None = None
    requested_pre_roll_s: NonNegativeFloat = 0.0
    delivered_pre_roll_s: NonNegativeFloat = 0.0
    categories: tuple[Label, ...] = ()
    case_id: Label | None = None
    critical: bool = False
    key_id: KeyId


class SignedManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A manifest's exact bytes (as a JSON string) and the Ed25519 signature over them."""

    manifest: Annotated[str, msgspec.Meta(max_length=32 * 1024)]
    signature: SignatureHex
    key_id: KeyId

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers."""
        return self.manifest.encode("utf-8")

    def decode(self) -> SegmentManifest:
        """The manifest itself; ``DecodeError`` if the embedded JSON is not a valid manifest."""
        return decode_manifest(self.signed_bytes())

    def upload_id(self) -> str:
        """Deterministic upload identifier: the first 16 bytes of SHA-256 of the signed bytes."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()[:32]


def encode_manifest(manifest: SegmentManifest) -> bytes:
    """The manifest as compact JSON with sorted keys: the bytes a device signs.

    Raises ``LocalProtocolError`` if a field is out of its documented range.
    """
    return encode_checked(manifest)


def decode_manifest(data: bytes | str) -> SegmentManifest:
    """Parse manifest JSON strictly; raises ``DecodeError`` naming the field at fault."""
    return decode_json(data, SegmentManifest, max_bytes=MAX_JSON_MESSAGE_BYTES)


def key_id_for(public_key_raw: bytes) -> str:
    """The key ID of a raw 32-byte Ed25519 public key: 16 hex characters of its SHA-256."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]
