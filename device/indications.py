"""What the camera shows and sounds: indications for the hardware backend, and its timers.

The camera core decides *that* the officer is told something (a recording started, a reminder,
a stop waiting for confirmation); the backend decides how (LED pattern, tone, vibration). In
stealth mode nothing is shown or sounded, but the indication is still queued, marked silent, so
tests and the audit log can see that the camera kept quiet on purpose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

MAX_QUEUED_INDICATIONS: Final = 1000


class Signal(Enum):
    """Something the officer is told."""

    RECORDING_STARTED = "recording_started"
    RECORDING_STOPPED = "recording_stopped"
    RECORDING_REMINDER = "recording_reminder"  # every 2 min while recording (policy)
    SLEEP_REMINDER = "sleep_reminder"  # every 15 min in sleep mode (policy)
    MARKER = "marker"
    CONFIRM_STOP = "confirm_stop"  # press now to confirm the stop
    CATEGORY_PROMPT = "category_prompt"
    TRIGGER_IGNORED = "trigger_ignored"
    BATTERY = "battery"
    STORAGE_FULL = "storage_full"


@dataclass(frozen=True, slots=True)
class Indication:
    """One signal at monotonic time ``at_s``; ``silent`` when stealth mode suppressed it."""

    signal: Signal
    at_s: float
    silent: bool


class Indicator:
    """The queue of indications the backend drains, bounded; what overflows is counted."""

    def __init__(self, capacity: int = MAX_QUEUED_INDICATIONS) -> None:
        self.queue: deque[Indication] = deque(maxlen=capacity)
        self.stealth = False
        self.overflowed = 0

    def signal(self, signal: Signal, now: float) -> Indication:
        """Queue ``signal`` (silent in stealth mode) and return it."""
        if len(self.queue) == self.queue.maxlen:
            self.overflowed += 1
        indication = Indication(signal, round(now, 6), silent=self.stealth)
        self.queue.append(indication)
        return indication

    def drain(self) -> list[Indication]:
        """Every queued indication, oldest first; the queue is emptied."""
        items = list(self.queue)
        self.queue.clear()
        return items


class Timers:
    """Named deadlines on the monotonic clock: set, cancel, and take the ones that are due."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}

    def set(self, name: str, at: float) -> None:
        """Run ``name`` at ``at`` (replacing an earlier setting)."""
        self._due[name] = at

    def cancel(self, name: str) -> None:
        """Forget ``name`` if set."""
        self._due.pop(name, None)

    def get(self, name: str) -> float | None:
        """When ``name`` is due, or None."""
        return self._due.get(name)

    def next(self) -> float | None:
        """The earliest deadline, or None."""
        return min(self._due.values(), default=None)

    def pop_due(self, now: float) -> list[str]:
        """The names due at ``now``, earliest first, removed from the set."""
        due = sorted((at, name) for name, at in self._due.items() if at <= now)
        for _, name in due:
            del self._due[name]
        return [name for _, name in due]

    def clear(self) -> None:
        """Forget every deadline."""
        self._due.clear()
