"""Encoded media packets as the firmware sees them, and where their bytes come from.

A ``Packet`` is metadata only: which stream, its per-stream sequence number, timing, whether it is a
keyframe and how many bytes it has. The bytes themselves come from a ``PayloadSource`` on demand, so
code that only needs timing and sizes (storage budgets, fleets) never pays for payloads, and a
receiver can regenerate a packet's bytes to check what it was sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol


class Stream(IntEnum):
    """An elementary stream of the camera's encoder; the value is its wire and index code."""

    VIDEO = 0
    AUDIO = 1


class _PacketFields(NamedTuple):
    stream: Stream
    index: int  # type: ignore[assignment]  # the field shadows tuple.index, which packets never use
    pts_s: float
    duration_s: float
    keyframe: bool
    size: int


class Packet(_PacketFields):
    """One encoded access unit (a video frame or an audio frame), without its payload.

    ``pts_s`` is the presentation time on the device's media clock (seconds since the encoder
    started), ``duration_s`` how long it is shown or played. ``index`` counts the stream's packets
    from 0. Audio frames decode on their own, so every audio packet is a keyframe.

    Raises ``ValueError`` on impossible values: a bad packet is a bug in whoever made it, not a
    configuration the user can fix. An immutable tuple rather than a frozen dataclass: the
    simulated encoder makes one per packet, and ``trusted`` skips the checks for it.
    """

    __slots__ = ()

    def __new__(  # noqa: PLR0917 - the tuple's six fields, positionally as in the tuple
        cls,
        stream: Stream,
        index: int,
        pts_s: float,
        duration_s: float,
        keyframe: bool,
        size: int,
    ) -> Packet:
        if index < 0:
            raise ValueError(f"Packet.index must be >= 0, got {index}")
        if size < 0:
            raise ValueError(f"Packet.size must be >= 0 bytes, got {size}")
        if not math.isfinite(pts_s):
            raise ValueError(f"Packet.pts_s must be finite, got {pts_s}")
        if not (duration_s > 0.0 and math.isfinite(duration_s)):
            raise ValueError(f"Packet.duration_s must be finite and > 0, got {duration_s}")
        if stream is Stream.AUDIO and not keyframe:
            raise ValueError("audio packets are always keyframes")
        return super().__new__(cls, stream, index, pts_s, duration_s, keyframe, size)

    @classmethod
    def trusted(  # noqa: PLR0917 - the tuple's six fields, positionally as in the tuple
        cls,
        stream: Stream,
        index: int,
        pts_s: float,
        duration_s: float,
        keyframe: bool,
        size: int,
    ) -> Packet:
        """A packet from a source that already guarantees the checks (the simulated encoder)."""
        return tuple.__new__(cls, (stream, index, pts_s, duration_s, keyframe, size))

    @property
    def end_s(self) -> float:
        """When this packet stops being presented: ``pts_s + duration_s``."""
        return self.pts_s + self.duration_s

    @property
    def pts_us(self) -> int:
        """``pts_s`` rounded to whole microseconds, the unit of the segment record format."""
        return round(self.pts_s * 1_000_000)

    @property
    def duration_us(self) -> int:
        """``duration_s`` rounded to whole microseconds."""
        return round(self.duration_s * 1_000_000)


@dataclass(frozen=True, slots=True)
class BufferedPacket:
    """A packet together with its payload bytes, as the pre-event buffer hands them out."""

    packet: Packet
    payload: bytes


class PayloadSource(Protocol):
    """Makes the payload bytes of packets on demand.

    Implementations must be deterministic: the same packet always yields the same bytes, so a
    receiver holding an equal source can check content without the sender keeping a copy.
    """

    def payload(self, packet: Packet) -> bytes:
        """Return the packet's ``packet.size`` payload bytes."""
        ...

    def write_payload(self, packet: Packet, out: memoryview) -> None:
        """Write the packet's payload into ``out``, which is exactly ``packet.size`` bytes long.

        This is the zero-allocation path the pre-event buffer uses to fill its arena in place.
        """
        ...
