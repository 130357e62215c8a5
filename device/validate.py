"""Validation of configuration values, with messages that name the field and the allowed range."""

from __future__ import annotations

from device.errors import ConfigError


def check_number(
    owner: str, name: str, value: object, lo: float, hi: float, *, integer: bool
) -> None:
    """Raise ``ConfigError`` naming ``owner.name`` unless ``value`` is a number in [lo, hi].

    Booleans are refused even though Python treats them as integers: ``seconds = true`` in a
    file is a mistake, not 1.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        number = number and isinstance(value, int)
    if not (number and isinstance(value, int | float) and lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{owner}.{name} must be {kind} from {lo} to {hi}, got {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    """Raise ``ConfigError`` naming ``owner.name`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
