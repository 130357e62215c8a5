"""The receiver's out-of-order buffer: chunks that arrived ahead of a gap, bounded in bytes.

MQTT delivers one publisher's QoS 1 messages in order, so in a healthy session every chunk lands
exactly at the committed offset and this buffer stays empty. It earns its keep after loss and
reconnects, when retransmitted and late chunks cross: holding a few of them saves resending them.
It is memory only; losing it (restart, idle expiry) costs retransmissions, never correctness.
"""

from __future__ import annotations

import enum


class Placement(enum.Enum):
    """What ``Reassembly.add`` did with a piece."""

    HELD = "held"
    DUPLICATE = "duplicate"  # an equal or longer piece at that offset is already held
    NO_ROOM = "no_room"  # holding it would exceed the byte limit


class Reassembly:
    """Pieces of data keyed by offset, waiting for the committed prefix to reach them."""

    __slots__ = ("_held_bytes", "_pieces")

    def __init__(self) -> None:
        self._pieces: dict[int, bytes] = {}
        self._held_bytes = 0

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def held_bytes(self) -> int:
        """Total data bytes held (overlapping pieces count twice: this is the memory bound)."""
        return self._held_bytes

    def clear(self) -> None:
        """Drop every piece."""
        self._pieces.clear()
        self._held_bytes = 0

    def add(self, offset: int, data: bytes, *, limit_bytes: int) -> Placement:
        """Hold ``data`` at ``offset`` unless it is redundant or would exceed ``limit_bytes``."""
        existing = self._pieces.get(offset)
        if existing is not None and len(existing) >= len(data):
            return Placement.DUPLICATE
        replaced = len(existing) if existing is not None else 0
        if self._held_bytes - replaced + len(data) > limit_bytes:
            return Placement.NO_ROOM
        self._pieces[offset] = data
        self._held_bytes += len(data) - replaced
        return Placement.HELD

    def take_ready(self, committed: int) -> tuple[int, bytes] | None:
        """Remove and return the lowest piece starting at or before ``committed``, if any.

        The caller commits the part past ``committed`` (pieces wholly below it are simply
        dropped) and calls again until ``None``.
        """
        if not self._pieces:
            return None
        # A linear scan: the buffer holds at most a window of pieces (tens).
        offset = min(self._pieces)
        if offset > committed:
            return None
        data = self._pieces.pop(offset)
        self._held_bytes -= len(data)
        return offset, data
