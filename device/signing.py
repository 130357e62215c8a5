"""Device signing keys, manifest signatures, and the receiver's store of trusted public keys.

Each camera has one Ed25519 key, kept as an unencrypted PKCS#8 PEM file of mode 0600 and
identified by its ``key_id`` (first 16 hex digits of SHA-256 of the raw 32-byte public key). The
device signs the exact bytes of each segment manifest (``protocol.manifest``) and its audit
checkpoints. Trust model: a verifier trusts a public key because it was enrolled out of band
(``TrustStore.enroll``: provisioning, docking station, operator), never because a message
carried it; trust-on-first-use is an explicit opt-in of a ``TrustStore``.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from device.durable import atomic_write_bytes, storage_error
from device.errors import ConfigError, EvidenceError
from protocol.errors import DecodeError, LocalProtocolError
from protocol.ids import is_safe_id
from protocol.manifest import SegmentManifest, SignedManifest, encode_manifest, key_id_for

PUBLIC_KEY_BYTES: Final = 32
KEY_FILE_MODE: Final = 0o600
_PEM_PUBLIC: Final = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\s*", re.S)


class Signer(Protocol):
    """Anything that signs bytes with a key known by ``key_id`` (``DeviceKey``, or a fake)."""

    @property
    def key_id(self) -> str:
        """Key ID of the signing key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The signature over ``data``."""
        ...


class DeviceKey:
    """A camera's Ed25519 signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = key_id_for(self._public)

    @classmethod
    def generate(cls) -> DeviceKey:
        """A new random key (from the OS's CSPRNG)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> DeviceKey:
        """The key whose 32-byte Ed25519 private seed is ``seed``.

        For simulations that must be reproducible (the same scenario seed gives the same
        signatures); a real device uses ``generate``.
        """
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: Path) -> DeviceKey:
        """Load a key saved by ``save``.

        ``StorageError`` if the file cannot be read; ``ConfigError`` if others may read it (mode
        wider than 0600) or it is not an unencrypted Ed25519 private key in PEM.
        """
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise storage_error("reading device key", path, exc) from exc
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigError(
                f"device key {path} has mode {stat.S_IMODE(mode):04o}: others may read it; "
                f"run chmod 600 on it (and consider the key compromised)"
            )
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"device key {path} is not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"device key {path} is not an Ed25519 key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key atomically with mode 0600; never replaces an existing file."""
        pem = self._key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        atomic_write_bytes(path, pem, mode=KEY_FILE_MODE, overwrite=False)

    @property
    def key_id(self) -> str:
        """16 hex digits identifying the public key."""
        return self._key_id

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    def public_pem(self) -> bytes:
        """The public key as a PEM SubjectPublicKeyInfo block (what ``TrustStore`` files hold)."""
        return self._key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def sign_manifest(self, manifest: SegmentManifest) -> SignedManifest:
        """Sign the manifest's exact encoded bytes.

        ``LocalProtocolError`` if the manifest is invalid or names another key in ``key_id``.
        """
        if manifest.key_id != self._key_id:
            raise LocalProtocolError(
                f"manifest names key {manifest.key_id} but the device key is {self._key_id}"
            )
        data = encode_manifest(manifest)
        return SignedManifest(
            manifest=data.decode(), signature=self.sign(data).hex(), key_id=self._key_id
        )


def signature_valid(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by that public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_signed_manifest(signed: SignedManifest, public_key_raw: bytes) -> SegmentManifest:
    """Check a signed manifest against a trusted public key; return the manifest.

    ``EvidenceError`` naming the upload ID if the key IDs disagree, the signature does not
    verify, or the signed bytes are not a valid manifest.
    """
    name = f"manifest {signed.upload_id()}"
    expected = key_id_for(public_key_raw)
    if signed.key_id != expected:
        raise EvidenceError(f"{name} is signed by key {signed.key_id}, expected key {expected}")
    try:
        signature = bytes.fromhex(signed.signature)
    except ValueError as exc:  # a decoded envelope is checked, one built in code may not be
        raise EvidenceError(f"{name}: the signature is not hex") from exc
    if not signature_valid(public_key_raw, signature, signed.signed_bytes()):
        raise EvidenceError(f"{name}: the signature does not match the manifest bytes")
    try:
        manifest = signed.decode()
    except DecodeError as exc:
        raise EvidenceError(f"{name} is signed but is not a valid manifest: {exc}") from exc
    if manifest.key_id != signed.key_id:
        raise EvidenceError(f"{name}: envelope key {signed.key_id} != manifest key")
    return manifest


class TrustStore:
    """Trusted device public keys: a directory of ``<device>.pub`` files.

    A file holds either one raw 32-byte key or one or more PEM ``PUBLIC KEY`` blocks (several
    after a key rotation: old manifests still verify). Keys get in by ``enroll`` (out of band),
    or, only with ``trust_on_first_use``, by ``offer`` for a device that has no key yet.
    """

    def __init__(self, directory: Path, *, trust_on_first_use: bool = False) -> None:
        self._dir = directory
        self._tofu = trust_on_first_use

    def keys(self, device_id: str) -> tuple[bytes, ...]:
        """Raw public keys enrolled for ``device_id`` (empty if none)."""
        path = self._path(device_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise storage_error("reading trusted key", path, exc) from exc
        return _parse_public_keys(data, path)

    def enroll(self, device_id: str, public_key_raw: bytes) -> None:
        """Trust ``public_key_raw`` for ``device_id`` (idempotent; adds to earlier keys)."""
        known = self.keys(device_id)
        if public_key_raw in known:
            return
        key = _public_key(public_key_raw)
        blocks = [
            _public_key(raw).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            for raw in known
        ]
        blocks.append(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error("creating trust store", self._dir, exc) from exc
        atomic_write_bytes(self._path(device_id), b"".join(blocks))

    def offer(self, device_id: str, public_key_raw: bytes) -> None:
        """A device presents its key: accept it if enrolled, or as its first key under TOFU.

        ``EvidenceError`` otherwise: a different key for a known device, or any key for an
        unknown device without trust-on-first-use.
        """
        known = self.keys(device_id)
        if public_key_raw in known:
            return
        offered = key_id_for(public_key_raw)
        if known:
            raise EvidenceError(
                f"device {device_id} offered key {offered}, which is not enrolled "
                f"(enrolled: {', '.join(key_id_for(k) for k in known)}); enrol it out of band"
            )
        if not self._tofu:
            raise EvidenceError(
                f"device {device_id} is not enrolled (offered key {offered}); enrol its key "
                "out of band or configure trust-on-first-use"
            )
        self.enroll(device_id, public_key_raw)

    def public_key(self, device_id: str, key_id: str) -> bytes:
        """The enrolled key of ``device_id`` with ``key_id``; ``EvidenceError`` if there is none."""
        for raw in self.keys(device_id):
            if key_id_for(raw) == key_id:
                return raw
        raise EvidenceError(
            f"device {device_id} has no enrolled key {key_id}; enrol it out of band"
        )

    def verify_manifest(self, signed: SignedManifest) -> SegmentManifest:
        """Verify a signed manifest against the key enrolled for the device it names."""
        try:
            claimed = signed.decode()
        except DecodeError as exc:
            raise EvidenceError(f"manifest {signed.upload_id()} is not valid: {exc}") from exc
        return verify_signed_manifest(signed, self.public_key(claimed.device, signed.key_id))

    def _path(self, device_id: str) -> Path:
        if not is_safe_id(device_id):
            # Device IDs become file names: never let one climb out of the directory.
            raise EvidenceError(f"device ID {device_id!r} is not a valid ID")
        return self._dir / f"{device_id}.pub"


def _public_key(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _parse_public_keys(data: bytes, path: Path) -> tuple[bytes, ...]:
    if len(data) == PUBLIC_KEY_BYTES:
        return (data,)  # a PEM block is far longer than 32 bytes, so this is a raw key
    blocks = _PEM_PUBLIC.findall(data)
    if not blocks or _PEM_PUBLIC.sub(b"", data).strip():
        raise ConfigError(f"trusted key file {path} holds neither a raw key nor PEM public keys")
    keys: list[bytes] = []
    for block in blocks:
        try:
            key = load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"trusted key file {path} holds an unreadable PEM block") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"trusted key file {path} holds a key that is not Ed25519")
        keys.append(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    return tuple(keys)
