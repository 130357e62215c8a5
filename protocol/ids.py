"""Identifiers that appear in topics, file names and messages.

Device, group, recording and correlation IDs share one safe character set so that any of them can
be a single MQTT topic level and a file name on any operating system: ASCII letters and digits,
then letters, digits, ``_``, ``.`` or ``-``; 1 to 64 characters. That excludes the MQTT wildcards
``+`` and ``#``, the level separator ``/``, ``$`` (reserved for broker topics) and whitespace.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

import msgspec

from protocol.errors import LocalProtocolError

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
_ID_RE: Final = re.compile(ID_PATTERN)

SafeId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
"""A string constrained to the safe ID character set when decoded by msgspec."""

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An RFC 3339 timestamp with an explicit offset (devices send ``Z``)."""

Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
"""A SHA-256 digest as 64 lowercase hex characters."""


def is_safe_id(value: str) -> bool:
    """Whether ``value`` is a valid identifier."""
    return _ID_RE.fullmatch(value) is not None


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise ``LocalProtocolError``."""
    if not is_safe_id(value):
        raise LocalProtocolError(
            f"{what} {value!r} is not a valid ID: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return value
