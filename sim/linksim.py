"""A simulated message link in virtual time: latency, loss, duplication, reordering, corruption.

Messages are opaque bytes with a destination label. The link decides, from its own seeded
generator, what happens to each one and when it arrives; the caller pops deliveries in time
order. Used to join sans-IO protocol endpoints without sockets, deterministically for a seed.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from device.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """How badly the link behaves. Probabilities are per message, times in seconds."""

    latency_s: float = 0.005
    jitter_s: float = 0.002
    drop: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"link.{name} must be a probability in [0, 1), got {value}")
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ConfigError("link.latency_s and link.jitter_s must be >= 0")


@dataclass(slots=True)
class LinkStats:
    """What the link did to the traffic."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    corrupted: int = 0
    bytes_sent: int = 0


@dataclass(order=True, slots=True)
class _InFlight:
    arrival: float
    order: int
    destination: str = field(compare=False)
    payload: bytes = field(compare=False)


class SimulatedLink:
    """Carries messages between named endpoints in virtual time (jitter reorders them)."""

    def __init__(self, profile: LinkProfile, *, seed: int) -> None:
        self.profile = profile
        self.stats = LinkStats()
        self._random = random.Random(seed)
        self._queue: list[_InFlight] = []
        self._order = 0

    def send(self, destination: str, payload: bytes, now: float) -> None:
        """Hand a message to the link at virtual time ``now``."""
        self.stats.sent += 1
        self.stats.bytes_sent += len(payload)
        if self._random.random() < self.profile.drop:
            self.stats.dropped += 1
            return
        copies = 2 if self._random.random() < self.profile.duplicate else 1
        self.stats.duplicated += copies - 1
        for _ in range(copies):
            self._enqueue(destination, self._maybe_corrupt(payload), now)

    def next_arrival(self) -> float | None:
        """Virtual time of the next delivery, or None if nothing is in flight."""
        return self._queue[0].arrival if self._queue else None

    def pop(self) -> tuple[float, str, bytes]:
        """The next delivery: (arrival time, destination, payload)."""
        item = heapq.heappop(self._queue)
        self.stats.delivered += 1
        return item.arrival, item.destination, item.payload

    def _enqueue(self, destination: str, payload: bytes, now: float) -> None:
        delay = self.profile.latency_s + self._random.uniform(0.0, self.profile.jitter_s)
        self._order += 1
        heapq.heappush(self._queue, _InFlight(now + delay, self._order, destination, payload))

    def _maybe_corrupt(self, payload: bytes) -> bytes:
        if not payload or self._random.random() >= self.profile.corrupt:
            return payload
        self.stats.corrupted += 1
        damaged = bytearray(payload)
        position = self._random.randrange(len(damaged))
        damaged[position] ^= 1 << self._random.randrange(8)
        return bytes(damaged)
