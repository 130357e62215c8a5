"""Broker connection settings, parsed and validated once from a URL at start-up.

``parse_broker_url("mqtt://host:1883")`` or ``parse_broker_url("mqtts://host:8883",
ca_file=...)`` gives a frozen ``BrokerSettings``. Anything wrong raises ``ConfigError`` naming
the field, the value and what is allowed. ``Backoff`` holds the reconnection delays and computes
the jittered exponential delay from an injected ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from device.errors import ConfigError

ProtocolName = Literal["5", "3.1.1"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_KEEPALIVE_S = 30
DEFAULT_SESSION_EXPIRY_S = 86_400
"""One day: how long the broker keeps the device's session (and queued QoS 1 messages) offline."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_SESSION_EXPIRY_S = 0xFFFF_FFFF
"""MQTT 5's largest value, which means "never expire"."""


def _check_positive(name: str, value: float, *, upper: float = math.inf) -> None:
    if not (0 < value <= upper) or math.isnan(value):
        raise ConfigError(f"{name} must be > 0 and <= {upper}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnection delays: full-jitter exponential, ``base_s * 2**attempt`` capped at ``cap_s``.

    The attempt counter resets once a connection has stayed up ``stable_after_s`` seconds.
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_after_s: float = 10.0

    def __post_init__(self) -> None:
        _check_positive("backoff base_s", self.base_s)
        _check_positive("backoff cap_s", self.cap_s)
        _check_positive("backoff stable_after_s", self.stable_after_s)
        if self.cap_s < self.base_s:
            raise ConfigError(f"backoff cap_s ({self.cap_s}) must be >= base_s ({self.base_s})")

    def ceiling(self, attempt: int) -> float:
        """The largest delay before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A delay drawn uniformly from ``[ceiling/2, ceiling]`` (never zero, never in step)."""
        top = self.ceiling(attempt)
        return rng.uniform(top / 2, top)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how the device connects; validated when made.

    ``protocol`` is ``"5"`` (clean start off, session expiry ``session_expiry_s``) or ``"3.1.1"``
    (clean session off: the broker keeps the session until it decides otherwise).
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    protocol: ProtocolName = "5"
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"broker host must be a non-empty name or address, got {self.host!r}")
        if not 1 <= self.port <= 65_535:
            raise ConfigError(f"broker port must be 1..65535, got {self.port}")
        if self.protocol not in ("5", "3.1.1"):
            raise ConfigError(f"MQTT protocol must be '5' or '3.1.1', got {self.protocol!r}")
        if self.password is not None and self.username is None:
            raise ConfigError("a broker password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ConfigError("ca_file is only used with TLS (mqtts://)")
        if not 5 <= self.keepalive_s <= 65_535:
            raise ConfigError(f"keepalive_s must be 5..65535, got {self.keepalive_s}")
        if not 1 <= self.session_expiry_s <= MAX_SESSION_EXPIRY_S:
            raise ConfigError(
                f"session_expiry_s must be 1..{MAX_SESSION_EXPIRY_S} (0 would drop messages "
                f"queued while offline), got {self.session_expiry_s}"
            )
        _check_positive("connect_timeout_s", self.connect_timeout_s, upper=3600)

    @property
    def url(self) -> str:
        """The broker URL without credentials, for logs."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | Path | None = None,
    protocol: ProtocolName = "5",
    keepalive_s: int = DEFAULT_KEEPALIVE_S,
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    backoff: Backoff | None = None,
) -> BrokerSettings:
    """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` into ``BrokerSettings``.

    Credentials may sit in the URL (``mqtt://user:pass@host``) or in the keyword arguments, not
    both. ``ca_file`` must be an existing file and needs ``mqtts``. Raises ``ConfigError``.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r} is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"broker URL {url!r} must not have a path, query or fragment")
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host")
    if parts.username is not None:
        if username is not None or password is not None:
            raise ConfigError("give broker credentials in the URL or as arguments, not both")
        username = unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
    ca_path = None if ca_file is None else Path(ca_file)
    if ca_path is not None and not ca_path.is_file():
        raise ConfigError(f"ca_file {str(ca_path)!r} is not a readable file")
    return BrokerSettings(
        host=parts.hostname,
        port=DEFAULT_PORTS[scheme] if port is None else port,
        tls=scheme == "mqtts",
        username=username,
        password=password,
        ca_file=ca_path,
        protocol=protocol,
        keepalive_s=keepalive_s,
        session_expiry_s=session_expiry_s,
        connect_timeout_s=connect_timeout_s,
        backoff=Backoff() if backoff is None else backoff,
    )
