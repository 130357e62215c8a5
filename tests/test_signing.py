"""Device keys, manifest signatures, the trust store, and the durable writes they rely on."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.durable import atomic_write_bytes, fsync_directory
from device.errors import ConfigError, EvidenceError, StorageError
from device.signing import DeviceKey, TrustStore, signature_valid, verify_signed_manifest
from protocol.errors import LocalProtocolError
from protocol.manifest import SegmentManifest, SignedManifest, key_id_for

KEY = DeviceKey.generate()
OTHER = DeviceKey.generate()


def _manifest(key: DeviceKey = KEY, **changes: object) -> SegmentManifest:
    fields: dict[str, object] = {
        "device": "cam-1",
        "recording": "rec-000001",
        "index": 0,
        "status": "complete",
        "size": 1234,
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "records": 10,
        "start_utc": datetime(2026, 11, 29, 14, 0, tzinfo=UTC),
        "stop_utc": datetime(2026, 11, 29, 14, 5, tzinfo=UTC),
        "start_monotonic_s": 10.0,
        "stop_monotonic_s": 310.0,
        "clock_set": True,
        "start_trigger": "button",
        "key_id": key.key_id,
    }
    return SegmentManifest(**(fields | changes))  # type: ignore[arg-type]


def test_key_saves_with_mode_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    old_umask = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        KEY.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = DeviceKey.load(path)
    assert (loaded.public_bytes(), loaded.key_id) == (KEY.public_bytes(), KEY.key_id)
    assert loaded.key_id == key_id_for(KEY.public_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]  # no temp file left


def test_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    KEY.save(path)
    with pytest.raises(StorageError, match=r"device\.key"):
        OTHER.save(path)
    assert DeviceKey.load(path).key_id == KEY.key_id


def test_loading_a_bad_key_file_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    with pytest.raises(StorageError, match=r"device\.key"):
        DeviceKey.load(path)
    KEY.save(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        DeviceKey.load(path)
    path.chmod(0o600)
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        DeviceKey.load(path)
    path.write_bytes(KEY.public_pem())
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        DeviceKey.load(path)


def test_sign_and_verify_a_manifest() -> None:
    manifest = _manifest(categories=("arrest",), case_id="2026-0042")
    signed = KEY.sign_manifest(manifest)
    assert signed.key_id == KEY.key_id
    assert verify_signed_manifest(signed, KEY.public_bytes()) == manifest
    wire = msgspec.json.encode(signed)
    received = msgspec.json.decode(wire, type=SignedManifest)
    assert verify_signed_manifest(received, KEY.public_bytes()) == manifest
    assert signature_valid(
        KEY.public_bytes(), bytes.fromhex(signed.signature), signed.signed_bytes()
    )


def test_signing_refuses_a_manifest_naming_another_key() -> None:
    with pytest.raises(LocalProtocolError, match="names key"):
        KEY.sign_manifest(_manifest(OTHER))


@given(st.data())
def test_any_tampered_manifest_byte_is_evidence_error(data: st.DataObject) -> None:
    signed = KEY.sign_manifest(_manifest())
    text = signed.manifest
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != text[position]))
    tampered = SignedManifest(
        manifest=text[:position] + replacement + text[position + 1 :],
        signature=signed.signature,
        key_id=signed.key_id,
    )
    with pytest.raises(EvidenceError, match="signature does not match"):
        verify_signed_manifest(tampered, KEY.public_bytes())


def test_wrong_key_bad_signature_and_malformed_manifest_are_evidence_errors() -> None:
    signed = KEY.sign_manifest(_manifest())
    with pytest.raises(EvidenceError, match=f"signed by key {KEY.key_id}, expected key"):
        verify_signed_manifest(signed, OTHER.public_bytes())
    forged = SignedManifest(
        manifest=signed.manifest,
        signature=OTHER.sign(signed.signed_bytes()).hex(),
        key_id=KEY.key_id,
    )
    with pytest.raises(EvidenceError, match="signature does not match"):
        verify_signed_manifest(forged, KEY.public_bytes())
    body = b'{"v":1,"device":"cam-1"}'
    malformed = SignedManifest(
        manifest=body.decode(), signature=KEY.sign(body).hex(), key_id=KEY.key_id
    )
    with pytest.raises(EvidenceError, match="not a valid manifest"):
        verify_signed_manifest(malformed, KEY.public_bytes())
    # The envelope's key ID must match the manifest's: no key vouches for another's manifest.
    other_body = SignedManifest(
        manifest=OTHER.sign_manifest(_manifest(OTHER)).manifest,
        signature="00" * 64,
        key_id=KEY.key_id,
    )
    resigned = SignedManifest(
        manifest=other_body.manifest,
        signature=KEY.sign(other_body.signed_bytes()).hex(),
        key_id=KEY.key_id,
    )
    with pytest.raises(EvidenceError, match="envelope key"):
        verify_signed_manifest(resigned, KEY.public_bytes())
    not_hex = SignedManifest(manifest=signed.manifest, signature="zz" * 64, key_id=KEY.key_id)
    with pytest.raises(EvidenceError, match="not hex"):
        verify_signed_manifest(not_hex, KEY.public_bytes())


def test_trust_store_is_explicit_enrolment_by_default(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    signed = KEY.sign_manifest(_manifest())
    with pytest.raises(EvidenceError, match="no enrolled key"):
        store.verify_manifest(signed)
    with pytest.raises(EvidenceError, match="not enrolled"):
        store.offer("cam-1", KEY.public_bytes())
    store.enroll("cam-1", KEY.public_bytes())
    store.enroll("cam-1", KEY.public_bytes())  # idempotent
    assert store.keys("cam-1") == (KEY.public_bytes(),)
    assert store.verify_manifest(signed) == _manifest()
    store.offer("cam-1", KEY.public_bytes())
    with pytest.raises(EvidenceError, match="not enrolled"):
        store.offer("cam-1", OTHER.public_bytes())


def test_trust_on_first_use_trusts_only_the_first_key(tmp_path: Path) -> None:
    store = TrustStore(tmp_path, trust_on_first_use=True)
    store.offer("cam-1", KEY.public_bytes())
    assert store.public_key("cam-1", KEY.key_id) == KEY.public_bytes()
    with pytest.raises(EvidenceError, match="which is not enrolled"):
        store.offer("cam-1", OTHER.public_bytes())


def test_a_rotated_key_keeps_old_manifests_verifiable(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    store.enroll("cam-1", KEY.public_bytes())
    store.enroll("cam-1", OTHER.public_bytes())
    assert store.keys("cam-1") == (KEY.public_bytes(), OTHER.public_bytes())
    for key in (KEY, OTHER):
        assert store.verify_manifest(key.sign_manifest(_manifest(key))).key_id == key.key_id
    assert (tmp_path / "cam-1.pub").read_bytes().count(b"BEGIN PUBLIC KEY") == 2


def test_trust_store_reads_raw_and_pem_files_and_rejects_others(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    (tmp_path / "raw.pub").write_bytes(KEY.public_bytes())
    (tmp_path / "pem.pub").write_bytes(b"\n" + KEY.public_pem() + b"\n")
    assert store.keys("raw") == store.keys("pem") == (KEY.public_bytes(),)
    (tmp_path / "bad.pub").write_bytes(KEY.public_pem() + b"trailing junk")
    with pytest.raises(ConfigError, match=r"bad\.pub"):
        store.keys("bad")
    (tmp_path / "rsa.pub").write_bytes(
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(ConfigError, match="unreadable PEM"):
        store.keys("rsa")
    with pytest.raises(EvidenceError, match="not a valid ID"):
        store.keys("../etc/passwd")


def test_atomic_write_replaces_whole_files_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(StorageError, match=r"state\.json"):
        atomic_write_bytes(path, b"newer", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    with pytest.raises(StorageError, match="missing"):
        atomic_write_bytes(tmp_path / "missing" / "x", b"")
    with pytest.raises(StorageError, match="check that the storage"):
        fsync_directory(tmp_path / "missing")
