"""Segment manifests: exact-bytes signing envelope and strict decoding."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import DecodeError, LocalProtocolError
from protocol.jsoncodec import decode_json
from protocol.manifest import (
    SegmentManifest,
    SignedManifest,
    decode_manifest,
    encode_manifest,
    key_id_for,
)
from tests.fuzz import FUZZ_EXAMPLES

START = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
STOP = datetime(2026, 11, 29, 14, 5, tzinfo=UTC)


def _manifest(**changes: object) -> SegmentManifest:
    fields: dict[str, object] = {
        "device": "cam-1",
        "recording": "rec-000001",
        "index": 0,
        "status": "complete",
        "size": 1234,
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "records": 10,
        "start_utc": START,
        "stop_utc": STOP,
        "start_monotonic_s": 10.0,
        "stop_monotonic_s": 310.0,
        "clock_set": True,
        "start_trigger": "button",
        "requested_pre_roll_s": 30.0,
        "delivered_pre_roll_s": 29.5,
        "key_id": "0123456789abcdef",
    }
    return SegmentManifest(**(fields | changes))  # type: ignore[arg-type]


def test_manifest_round_trips() -> None:
    manifest = _manifest(categories=("traffic", "arrest"), case_id="2026-0042")
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_manifest_bytes_are_stable() -> None:
    assert encode_manifest(_manifest()) == encode_manifest(_manifest())
    keys = list(json.loads(encode_manifest(_manifest())))
    assert keys == sorted(keys)


def test_signature_covers_the_exact_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = encode_manifest(_manifest(key_id=key_id_for(public)))
    signed = SignedManifest(
        manifest=body.decode(), signature=key.sign(body).hex(), key_id=key_id_for(public)
    )
    wire = json.dumps(
        {"manifest": signed.manifest, "signature": signed.signature, "key_id": signed.key_id}
    ).encode()
    received = decode_json(wire, SignedManifest, max_bytes=65536)
    key.public_key().verify(bytes.fromhex(received.signature), received.signed_bytes())
    assert received.decode().key_id == key_id_for(public)
    assert received.upload_id() == hashlib.sha256(body).hexdigest()[:32]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"sha256": "ABC"}, "$.sha256"),
        ({"index": -1}, "$.index"),
        ({"status": "tampered"}, "$.status"),
        ({"device": "../etc"}, "$.device"),
        ({"key_id": "xyz"}, "$.key_id"),
        ({"start_utc": "2026-11-29 14:00"}, "$.start_utc"),
    ],
)
def test_bad_manifest_fields_are_named(change: dict[str, object], where: str) -> None:
    document = json.loads(encode_manifest(_manifest())) | change
    with pytest.raises(DecodeError) as caught:
        decode_manifest(json.dumps(document).encode())
    assert caught.value.where == where


def test_we_refuse_to_sign_an_invalid_manifest() -> None:
    with pytest.raises(LocalProtocolError, match="sha256"):
        encode_manifest(_manifest(sha256="not-a-hash"))


@settings(max_examples=FUZZ_EXAMPLES // 5)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_manifest(data)
