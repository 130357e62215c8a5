"""The device's UTC clock: an epoch set at some monotonic instant, read at another.

The core never reads a clock itself; it passes monotonic ``now`` values here to get UTC. A clock
that was never set still answers (from the epoch it booted with) but says so, and everything
stamped with it carries ``clock_set = false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from protocol.vocabulary import ClockSource


@dataclass(slots=True)
class DeviceClock:
    """UTC = ``epoch_utc`` + (monotonic now - ``epoch_mono_s``)."""

    epoch_utc: datetime
    epoch_mono_s: float = 0.0
    source: ClockSource = "unset"

    def __post_init__(self) -> None:
        if self.epoch_utc.tzinfo is None:
            raise ValueError("DeviceClock.epoch_utc must be timezone-aware")
        self.epoch_utc = self.epoch_utc.astimezone(UTC)

    @property
    def is_set(self) -> bool:
        """Whether UTC timestamps can be trusted."""
        return self.source != "unset"

    def utc(self, now: float) -> datetime:
        """UTC at monotonic time ``now`` (microsecond resolution)."""
        return self.epoch_utc + timedelta(microseconds=round((now - self.epoch_mono_s) * 1e6))

    def set(self, utc: datetime, now: float, source: ClockSource) -> None:
        """Set the clock: at monotonic ``now`` it is ``utc``, learnt from ``source``."""
        self.epoch_utc = utc.astimezone(UTC)
        self.epoch_mono_s = now
        self.source = source
