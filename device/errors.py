"""Errors raised by the device package, split by fault.

``ConfigError``: a configuration or policy value is wrong (the user's input).
``StorageError``: the environment failed us (disk full, permission, I/O error).
``EvidenceError``: stored evidence does not verify (corruption or tampering).
``HardwareError``: the hardware backend cannot be used (port, permission, protocol version).
"""

from __future__ import annotations

from protocol.errors import BwcError


class DeviceError(BwcError):
    """Root of the device package's errors."""


class ConfigError(DeviceError):
    """A configuration or policy value is invalid; the message names it and the allowed range."""


class StorageError(DeviceError):
    """Reading or writing the evidence store failed for a reason outside our control."""


class EvidenceError(DeviceError):
    """Stored evidence or the audit log does not verify; the message names the first fault."""


class HardwareError(DeviceError):
    """The hardware backend cannot be used: a missing port, no permission, a wrong protocol."""
