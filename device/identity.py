"""Who the device is: its ID and Ed25519 key, kept in its data directory.

``device.json`` names the device and its public key (for verifiers); ``device.key`` is the private
key (mode 0600). A directory belongs to one device for life: opening it as another is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from device.durable import atomic_write_bytes
from device.errors import ConfigError, EvidenceError, StorageError
from device.signing import DeviceKey
from protocol.ids import SafeId, check_id

IDENTITY_FILE = "device.json"
KEY_FILE = "device.key"


class IdentityDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The contents of ``device.json``."""

    v: int = 1
    device: SafeId
    key_id: str
    public_key: str


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A device ID and its signing key."""

    device_id: str
    key: DeviceKey

    @classmethod
    def load_or_create(cls, root: Path, device_id: str, *, seed: int | None) -> DeviceIdentity:
        """Open the identity in ``root``, or create it there (from ``seed`` when reproducible)."""
        check_id(device_id, "device ID")
        if (root / IDENTITY_FILE).exists():
            return cls._load(root, device_id)
        if seed is None:
            key = DeviceKey.generate()
        else:
            key = DeviceKey.from_seed(seed_key(seed, device_id))
        key.save(root / KEY_FILE)
        document = IdentityDocument(
            device=device_id, key_id=key.key_id, public_key=key.public_bytes().hex()
        )
        atomic_write_bytes(root / IDENTITY_FILE, msgspec.json.encode(document))
        return cls(device_id, key)

    @classmethod
    def _load(cls, root: Path, device_id: str) -> DeviceIdentity:
        document = read_identity(root)
        if document.device != device_id:
            raise ConfigError(
                f"{root} belongs to device {document.device!r}, not {device_id!r}: "
                "use another data directory"
            )
        key = DeviceKey.load(root / KEY_FILE)
        if key.key_id != document.key_id:
            raise EvidenceError(f"{root / KEY_FILE} does not match the key named in device.json")
        return cls(device_id, key)


def read_identity(root: Path) -> IdentityDocument:
    """Parse ``root/device.json``; ``EvidenceError`` if it is missing or malformed."""
    path = root / IDENTITY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise EvidenceError(f"{path} is missing: {root} is not a device data directory") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return msgspec.json.decode(data, type=IdentityDocument)
    except msgspec.MsgspecError as exc:
        raise EvidenceError(f"{path} is not a valid identity file: {exc}") from exc


def seed_key(seed: int, device_id: str) -> bytes:
    """The 32-byte Ed25519 seed of a simulated device (reproducible runs only)."""
    return hashlib.sha256(f"bwc-sim device key:{seed}:{device_id}".encode()).digest()
