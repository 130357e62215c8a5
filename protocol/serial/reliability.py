"""The two halves of reliable delivery: the sender's retransmit queue, the receiver's dedup window.

A reliable frame is sent with ACK_REQUESTED and kept until ``Ack(seq)`` comes back or its
retries run out. The receiver acknowledges every copy but delivers only the first: it remembers
each reliable seq for ``dedup_window_s``, which the link config makes longer than the sender's
whole retry schedule, so a retransmission can never be mistaken for a new message.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.serial._base import SerialMessage


@dataclass(slots=True)
class PendingFrame:
    """A reliable frame awaiting its ack: what to resend, and when."""

    seq: int
    message: SerialMessage
    data: bytes
    """The encoded frame, resent byte for byte (same seq, so the receiver can dedup)."""
    transmissions: int
    deadline: float


class RetransmitQueue:
    """Reliable frames in flight, keyed by seq."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[int, PendingFrame] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, seq: int) -> bool:
        return seq in self._pending

    def add(self, entry: PendingFrame) -> None:
        """Track ``entry`` until it is acknowledged or given up."""
        self._pending[entry.seq] = entry

    def get(self, seq: int) -> PendingFrame | None:
        """Return the frame in flight with ``seq``, if any."""
        return self._pending.get(seq)

    def pop(self, seq: int) -> PendingFrame | None:
        """Stop tracking ``seq`` and return its entry (None for an unknown or stale seq)."""
        return self._pending.pop(seq, None)

    def due(self, now: float) -> list[PendingFrame]:
        """Entries whose ack timeout has expired, oldest deadline first."""
        expired = [entry for entry in self._pending.values() if entry.deadline <= now]
        return sorted(expired, key=lambda entry: entry.deadline)

    def next_deadline(self) -> float | None:
        """The earliest ack timeout, or None when nothing is in flight."""
        return min((entry.deadline for entry in self._pending.values()), default=None)

    def clear(self) -> list[PendingFrame]:
        """Forget everything in flight and return it, in the order it was sent."""
        entries = list(self._pending.values())
        self._pending.clear()
        return entries


class DedupWindow:
    """Recently received reliable seqs of one peer boot, each remembered for ``window_s``."""

    __slots__ = ("_capacity", "_seen", "_window_s")

    def __init__(self, window_s: float, capacity: int) -> None:
        self._window_s = window_s
        self._capacity = capacity
        # seq -> time last seen; insertion order is time order because refreshed seqs move last.
        self._seen: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def reset(self) -> None:
        """Forget every seq: the peer rebooted and numbers its frames afresh."""
        self._seen.clear()

    def is_duplicate(self, seq: int, now: float) -> bool:
        """Record ``seq`` as seen at ``now``; return whether it was already in the window."""
        self._expire(now)
        duplicate = self._seen.pop(seq, None) is not None
        self._seen[seq] = now
        if len(self._seen) > self._capacity:
            del self._seen[next(iter(self._seen))]
        return duplicate

    def _expire(self, now: float) -> None:
        horizon = now - self._window_s
        while self._seen:
            seq, seen_at = next(iter(self._seen.items()))
            if seen_at > horizon:
                break
            del self._seen[seq]
