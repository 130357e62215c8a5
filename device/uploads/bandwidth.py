"""A token bucket on the injected clock: caps the upload's bytes per second.

Tokens are bytes. They accrue at ``rate`` bytes per second up to ``capacity``; a message of
``size`` bytes may go once the bucket holds ``min(size, capacity)`` tokens, and then takes
``size`` of them (the bucket may go into debt for a message larger than its capacity, which
the following messages repay). Over any interval the bytes let through are therefore at most
``capacity`` plus ``rate`` times the interval plus one message, whatever the message sizes.
"""

from __future__ import annotations

import math
from typing import Final

from device.errors import ConfigError

_EPSILON: Final = 1e-6
"""Tokens short of a message that still let it go: a timer armed for ``ready_at`` must find the
bucket ready despite floating-point rounding, or the shell would spin."""


class TokenBucket:
    """Bytes per second with a burst of ``capacity`` bytes; starts full at the first use."""

    def __init__(self, rate_bytes_per_s: float, capacity: int) -> None:
        if not (math.isfinite(rate_bytes_per_s) and rate_bytes_per_s > 0):
            raise ConfigError(f"bandwidth must be > 0 bytes/s, got {rate_bytes_per_s}")
        if capacity < 1:
            raise ConfigError(f"bandwidth burst must be >= 1 byte, got {capacity}")
        self.rate = rate_bytes_per_s
        self.capacity = capacity
        self._tokens = float(capacity)
        self._last: float | None = None

    @classmethod
    def from_bits(cls, bits_per_s: float, capacity: int) -> TokenBucket:
        """A bucket for a cap given in bits per second (how links are rated)."""
        return cls(bits_per_s / 8.0, capacity)

    @property
    def tokens(self) -> float:
        """Tokens held at the last update (negative while in debt)."""
        return self._tokens

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.capacity), self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def ready_at(self, size: int, now: float) -> float:
        """The earliest time, not before ``now``, at which a message of ``size`` bytes may go."""
        self._refill(now)
        missing = min(size, self.capacity) - self._tokens
        if missing <= _EPSILON:
            return now
        return now + missing / self.rate

    def take(self, size: int, now: float) -> None:
        """Spend ``size`` tokens for a message sent at ``now`` (call when ``ready_at`` allows)."""
        self._refill(now)
        self._tokens -= size
