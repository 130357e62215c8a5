"""Which device keys the evidence receiver trusts: ``pinned`` or ``tofu`` (trust on first use).

Keys are bound to device IDs (``trust/{device}.pub``, the ``device.signing.TrustStore`` format),
never trusted on their own: a key enrolled for ``cam-1`` does not make ``cam-2``'s manifests valid.
Keys get into ``trust/`` by an operator (copying a ``.pub`` file there) or by being *presented* by
the host (``present``: a ``--trust-key`` file, or the embedded receiver's own cameras); either way
they are recorded in the store, so ``bwc-sim verify`` can check it later.

* ``pinned``: a presented key is added to the device's keys (the operator vouches for it, e.g.
  after a key rotation). Nothing a device sends ever adds a key. Every camera must be enrolled
  before it uploads, or its uploads are rejected (``unknown_device``). Right for a shared broker.
* ``tofu``: the first key presented for a device with no key is enrolled and pinned from then on;
  a different key for that device is refused. Convenient on a bench or in a simulation, but
  whoever presents a key for a new device ID first owns that ID at this receiver.

Manifests carry a key ID, never a key, so no upload message can present a key (protocol v1 has no
message that carries a device's public key).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

import msgspec

from device.errors import ConfigError, EvidenceError
from device.identity import IDENTITY_FILE, IdentityDocument
from device.signing import PUBLIC_KEY_BYTES, TrustStore, verify_signed_manifest
from protocol.ids import is_safe_id
from protocol.manifest import SegmentManifest, SignedManifest, key_id_for
from protocol.upload import CODE_BAD_SIGNATURE, CODE_UNKNOWN_DEVICE, Ack, rejected_ack


class TrustMode(StrEnum):
    """How keys get trusted (see the module docstring)."""

    PINNED = "pinned"
    TOFU = "tofu"


class TrustPolicy:
    """Trusted keys per device, and the trust check of an offer's signed manifest."""

    def __init__(self, directory: Path, mode: TrustMode) -> None:
        self.mode = mode
        self._store = TrustStore(directory, trust_on_first_use=mode is TrustMode.TOFU)

    def keys(self, device: str) -> tuple[bytes, ...]:
        """Every key trusted for ``device``, read from ``trust/`` at each call."""
        return self._store.keys(device)

    def present(self, device: str, public_key: bytes) -> None:
        """A key presented for ``device`` by the host: enrol it (``pinned``) or offer it (``tofu``).

        Under ``tofu`` a different key for a device that has one raises ``EvidenceError``.
        """
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise ConfigError(f"a public key is {PUBLIC_KEY_BYTES} bytes, not {len(public_key)}")
        if self.mode is TrustMode.TOFU:
            self._store.offer(device, public_key)
        else:
            self._store.enroll(device, public_key)

    def check(self, topic_device: str, signed: SignedManifest) -> Ack | None:
        """The ``rejected`` ack for a manifest this receiver must not accept, else ``None``.

        ``unknown_device``: the manifest names another device than the topic, the device has no
        trusted key, or not the one that signed; ``bad_signature``: the signature does not verify.
        The manifest must already have passed ``check_offer`` (it decodes).
        """
        upload_id = signed.upload_id()
        manifest = signed.decode()
        if manifest.device != topic_device:
            text = f"manifest of device {manifest.device} offered on the topic of {topic_device}"
            return rejected_ack(upload_id, CODE_UNKNOWN_DEVICE, text)
        keys = [key for key in self.keys(topic_device) if key_id_for(key) == signed.key_id]
        if not keys:
            return rejected_ack(upload_id, CODE_UNKNOWN_DEVICE, _unknown(manifest, self.mode))
        try:
            verify_signed_manifest(signed, keys[0])
        except EvidenceError as exc:
            return rejected_ack(upload_id, CODE_BAD_SIGNATURE, str(exc)[:500])
        return None


def _unknown(manifest: SegmentManifest, mode: TrustMode) -> str:
    text = f"device {manifest.device} has no trusted key {manifest.key_id}"
    return f"{text} ({mode.value} trust); enrol the key out of band"[:500]


def read_key_file(path: Path) -> tuple[str, bytes]:
    """``(device, raw public key)`` from a ``--trust-key`` file; ``ConfigError`` if unusable.

    Accepted: a device's ``device.json``, or a ``{device}.pub`` file (a raw 32-byte key, or a PEM
    public key block, as in ``trust/``).
    """
    if path.name == IDENTITY_FILE:
        return _identity_key(path)
    if path.suffix != ".pub" or not is_safe_id(path.stem):
        raise ConfigError(f"--trust-key {path}: expected a device.json or a {{device}}.pub file")
    if not path.is_file():
        raise ConfigError(f"--trust-key {path}: no such file")
    keys = TrustStore(path.parent).keys(path.stem)
    if len(keys) != 1:
        raise ConfigError(f"--trust-key {path}: holds {len(keys)} keys; give one key per file")
    return path.stem, keys[0]


def _identity_key(path: Path) -> tuple[str, bytes]:
    try:
        document = msgspec.json.decode(path.read_bytes(), type=IdentityDocument)
        raw = bytes.fromhex(document.public_key)
    except (OSError, msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"--trust-key {path}: not a readable device.json ({exc})") from exc
    if len(raw) != PUBLIC_KEY_BYTES or key_id_for(raw) != document.key_id:
        raise ConfigError(f"--trust-key {path}: its public key does not match its key_id")
    return document.device, raw


def present_all(policy: TrustPolicy, files: Iterable[Path]) -> list[tuple[str, str]]:
    """Present every key file; returns ``(device, key_id)`` pairs. ``ConfigError`` on a conflict.

    A directory stands for every ``device.json`` below it (a fleet's ``--data-dir``, say).
    """
    presented = []
    for path in _key_files(files):
        device, key = read_key_file(path)
        try:
            policy.present(device, key)
        except EvidenceError as exc:
            raise ConfigError(f"--trust-key {path}: {exc}") from exc
        presented.append((device, key_id_for(key)))
    return presented


def _key_files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        found = sorted(path.rglob(IDENTITY_FILE))
        if not found:
            raise ConfigError(f"--trust-key {path}: no {IDENTITY_FILE} below this directory")
        yield from found
