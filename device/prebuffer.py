"""The pre-event buffer: the last N seconds of encoded packets, kept before anyone presses Event.

Payload bytes live in one preallocated numpy ring (the arena, ``max_bytes`` long) and metadata in a
preallocated numpy structured ring of records, so a push allocates nothing that outlives the call.
Both are FIFO: trimming removes a prefix, always whole GOPs, so the buffer starts on a keyframe.
The exact rules are in docs/camera.md. Both rings are made at the first stored packet, and an
empty buffer can give them back (``release``): a camera that is never fed costs no arena.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from device.packets import BufferedPacket, Packet, PayloadSource, Stream
from device.validate import check_bool, check_number

AUTO_PACKET_RATE_HZ = 220
"""Packet rate the automatic record capacity allows for: 120 fps video plus 10 ms audio frames."""

AUTO_GOP_SLACK_S = 10.0
"""Seconds beyond ``seconds`` the automatic record capacity allows for (the longest GOP kept)."""

_RECORD = np.dtype(
    [
        ("stream", np.uint8),
        ("keyframe", np.bool_),
        ("index", np.int64),
        ("pts", np.float64),
        ("duration", np.float64),
        ("size", np.int64),
        ("start", np.int64),  # stream position of the first byte; its arena offset is start % cap
    ]
)


@dataclass(frozen=True, slots=True)
class PreEventBufferConfig:
    """Bounds of the pre-event buffer.

    ``seconds`` is the requested pre-roll (0-120 s); ``max_bytes`` the arena size; ``keep_audio``
    whether audio is buffered too (video only by default, as on most cameras). ``max_packets``
    sizes the record index; ``None`` derives it from ``seconds`` (see ``packet_capacity``).
    """

    seconds: float = 30.0
    max_bytes: int = 96 * 1024 * 1024  # 30 s of 1080p30 (60-75 MB) plus a GOP of headroom
    keep_audio: bool = False
    max_packets: int | None = None

    def __post_init__(self) -> None:
        check_number("prebuffer", "seconds", self.seconds, 0.0, 120.0, integer=False)
        check_number("prebuffer", "max_bytes", self.max_bytes, 1, 2**34, integer=True)
        check_bool("prebuffer", "keep_audio", self.keep_audio)
        if self.max_packets is not None:
            check_number("prebuffer", "max_packets", self.max_packets, 1, 10_000_000, integer=True)

    @property
    def packet_capacity(self) -> int:
        """Records the index holds: ``max_packets``, or enough for ``AUTO_PACKET_RATE_HZ`` packets
        a second over ``seconds + AUTO_GOP_SLACK_S``."""
        if self.max_packets is not None:
            return self.max_packets
        return math.ceil((self.seconds + AUTO_GOP_SLACK_S) * AUTO_PACKET_RATE_HZ)


class PushResult(Enum):
    """What ``push`` did with a packet; OVERSIZE and OVERFLOW are losses to report."""

    STORED = "stored"
    SKIPPED_AUDIO = "skipped_audio"  # keep_audio is off
    AWAITING_KEYFRAME = "awaiting_keyframe"  # no intact GOP to append to (after clear or loss)
    OVERSIZE = "oversize"  # larger than the whole arena: dropped, counted in dropped_*
    OVERFLOW = "overflow"  # fits only by evicting its own GOP: refused, the GOP is closed


class PreRollLimit(Enum):
    """Why a drain delivered what it did."""

    NONE = "none"  # delivered >= requested
    HISTORY = "history"  # the buffer has not been filling long enough
    CAPACITY = "capacity"  # the byte or record bound evicted GOPs or refused packets


@dataclass(frozen=True, slots=True)
class PreRoll:
    """Everything a drain hands to the recorder, in pts order, starting on a video keyframe.

    ``continuous`` says whether the next live video packet may follow directly; if not (the GOP
    was cut by a loss), the recording must wait for the next keyframe.
    """

    packets: tuple[BufferedPacket, ...]
    requested_s: float
    delivered_s: float
    continuous: bool
    limit: PreRollLimit


@dataclass(frozen=True, slots=True)
class PreRollTerms:
    """What a drain would hand out now, without the packets: ``PreRoll``'s other fields."""

    requested_s: float
    delivered_s: float
    continuous: bool
    limit: PreRollLimit


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters since the buffer was made. Every pushed packet lands in exactly one of
    held (in the buffer now), skipped_audio, awaiting_keyframe, dropped, overflow, trimmed,
    evicted, drained or cleared."""

    pushed_packets: int = 0
    pushed_bytes: int = 0
    skipped_audio: int = 0
    awaiting_keyframe: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    overflow_packets: int = 0
    overflow_bytes: int = 0
    trimmed_packets: int = 0
    trimmed_bytes: int = 0
    evicted_gops: int = 0
    evicted_packets: int = 0
    evicted_bytes: int = 0
    drained_packets: int = 0
    cleared_packets: int = 0


class PreEventBuffer:
    """The last ``seconds`` of packets, bounded by ``max_bytes``, always starting on a keyframe.

    Feed it with ``push`` in pts order while the camera is buffering; ``drain`` on activation;
    ``clear`` on sleep, dock or power-off (a camera keeps no buffer then).
    """

    def __init__(self, config: PreEventBufferConfig | None = None) -> None:
        self._config = config if config is not None else PreEventBufferConfig()
        self._cap = self._config.max_bytes
        self._slots = self._config.packet_capacity
        self._allocate(0, 0)  # the real arena and index come with the first stored packet
        self._counts = dict.fromkeys(BufferStats.__dataclass_fields__, 0)
        self._lent: Callable[[], PreRoll] | None = None
        """A ``drain_later`` whose copies are not yet made."""
        self._reset()

    def _allocate(self, arena_bytes: int, slots: int) -> None:
        # np.empty: pages are committed on the first lap rather than all at start-up.
        self._arena: npt.NDArray[np.uint8] = np.empty(arena_bytes, dtype=np.uint8)
        self._view = self._arena.data
        self._records = np.zeros(slots, dtype=_RECORD)
        self._pts: npt.NDArray[np.float64] = self._records["pts"]  # views, made once
        self._starts: npt.NDArray[np.int64] = self._records["start"]
        self._keyframes: npt.NDArray[np.int64] = np.zeros(slots, dtype=np.int64)
        self._allocated = slots > 0

    def release(self) -> bool:
        """Give the arena and the record index back to the allocator, if the buffer is empty.

        A buffer allocates them at its first stored packet; one that was drained (the camera is
        recording) or cleared holds pages it may not need for a long time. The next stored
        packet allocates them again (its pages are committed as they are written). Returns
        whether anything was released.
        """
        if not self._allocated or len(self):
            return False
        self._settle_lent()
        self._allocate(0, 0)
        return True

    def _reset(self) -> None:
        # Sequence numbers only grow while filling; slot = seq % capacity, arena offset likewise.
        self._rec_head = self._rec_tail = 0
        self._kf_head = self._kf_tail = 0
        self._byte_head = self._byte_tail = 0
        self._gop_open = False
        self._capacity_hit = False
        self._last_pts = -math.inf
        self._end_s = 0.0

    # --- feeding -----------------------------------------------------------------------------

    def push(self, packet: Packet, source: PayloadSource) -> PushResult:
        """Offer the encoder's next packet; returns what happened to it.

        Packets must come in non-decreasing pts order (``ValueError`` otherwise). The payload is
        written straight into the arena with ``source.write_payload``.
        """
        if self._lent is not None:
            self._settle_lent()
        if packet.pts_s < self._last_pts:
            raise ValueError(f"packet pts {packet.pts_s} is before the last one {self._last_pts}")
        self._last_pts = packet.pts_s
        counts = self._counts
        counts["pushed_packets"] += 1
        counts["pushed_bytes"] += packet.size
        video = packet.stream is Stream.VIDEO
        if not video and not self._config.keep_audio:
            counts["skipped_audio"] += 1
            return PushResult.SKIPPED_AUDIO
        if packet.size > self._cap:
            return self._refuse(packet, "dropped", PushResult.OVERSIZE)
        if not self._admits(packet, video=video):
            counts["awaiting_keyframe"] += 1
            return PushResult.AWAITING_KEYFRAME
        if not self._make_room(packet.size, opens_gop=video and packet.keyframe):
            return self._refuse(packet, "overflow", PushResult.OVERFLOW)
        self._store(packet, source, video=video)
        self._trim_to_seconds()
        return PushResult.STORED

    def _admits(self, packet: Packet, *, video: bool) -> bool:
        # A P-frame needs its GOP intact; audio needs a keyframe before it, i.e. a non-empty buffer.
        if video:
            return packet.keyframe or self._gop_open
        return self._rec_tail > self._rec_head

    def _refuse(self, packet: Packet, counter: str, result: PushResult) -> PushResult:
        # Losing a video packet breaks its GOP: later P-frames wait for the next keyframe.
        if packet.stream is Stream.VIDEO:
            self._gop_open = False
        self._capacity_hit = True
        self._counts[f"{counter}_packets"] += 1
        self._counts[f"{counter}_bytes"] += packet.size
        return result

    def _make_room(self, size: int, *, opens_gop: bool) -> bool:
        """Evict head GOPs until ``size`` more bytes and one more record fit.

        Never evicts the GOP the packet belongs to (the newest, unless the packet is a keyframe
        opening a new one): returns False instead.
        """
        while self._byte_tail - self._byte_head + size > self._cap or (
            self._rec_tail - self._rec_head == self._slots
        ):
            if self._kf_tail - self._kf_head < (1 if opens_gop else 2):
                return False
            packets, nbytes = self._drop_head_gop()
            self._capacity_hit = True
            self._counts["evicted_gops"] += 1
            self._counts["evicted_packets"] += packets
            self._counts["evicted_bytes"] += nbytes
        return True

    def _store(self, packet: Packet, source: PayloadSource, *, video: bool) -> None:
        if not self._allocated:
            self._allocate(self._cap, self._slots)
        seq, start, size = self._rec_tail, self._byte_tail, packet.size
        self._write(packet, source, start % self._cap)
        self._records[seq % self._slots] = (
            packet.stream,
            packet.keyframe,
            packet.index,
            packet.pts_s,
            packet.duration_s,
            size,
            start,
        )
        if video and packet.keyframe:
            self._keyframes[self._kf_tail % self._slots] = seq
            self._kf_tail += 1
            self._gop_open = True
        self._rec_tail = seq + 1
        self._byte_tail = start + size
        self._end_s = packet.pts_s + packet.duration_s

    def _write(self, packet: Packet, source: PayloadSource, offset: int) -> None:
        end = offset + packet.size
        if end <= self._cap:
            source.write_payload(packet, self._view[offset:end])
            return
        # The one packet per lap that straddles the arena's end is split in two, so the byte bound
        # stays exact instead of wasting the arena's tail; its payload is made as a temporary.
        payload = memoryview(source.payload(packet))
        first = self._cap - offset
        self._view[offset:] = payload[:first]
        self._view[: packet.size - first] = payload[first:]

    def _trim_to_seconds(self) -> None:
        """Drop the head GOP while the buffer without it still covers ``seconds``."""
        seconds = self._config.seconds
        while self._kf_tail - self._kf_head >= 2:
            second = int(self._keyframes[(self._kf_head + 1) % self._slots])
            if self._end_s - float(self._pts[second % self._slots]) < seconds:
                return
            packets, nbytes = self._drop_head_gop()
            self._counts["trimmed_packets"] += packets
            self._counts["trimmed_bytes"] += nbytes

    def _drop_head_gop(self) -> tuple[int, int]:
        """Remove every record before the second held keyframe (all of them if there is none)."""
        if self._kf_tail - self._kf_head >= 2:
            new_head = int(self._keyframes[(self._kf_head + 1) % self._slots])
            new_byte_head = int(self._starts[new_head % self._slots])
        else:
            new_head, new_byte_head = self._rec_tail, self._byte_tail  # only for a new keyframe
        removed = (new_head - self._rec_head, new_byte_head - self._byte_head)
        self._rec_head, self._byte_head = new_head, new_byte_head
        self._kf_head += 1
        return removed

    # --- handing out -------------------------------------------------------------------------

    def terms(self) -> PreRollTerms:
        """What ``drain`` would deliver now (cheap: nothing is copied)."""
        return PreRollTerms(self.requested_s, self.delivered_s, self._gop_open, self._limit())

    def drain(self) -> PreRoll:
        """Hand out every buffered packet with a copy of its bytes, and empty the buffer.

        Copies, not views into the arena: the arena is rewritten by the next push, and a copy of at
        most ``max_bytes`` once per activation costs far less than the pushes that filled it.
        """
        return self.drain_later()[1]()

    def drain_later(self) -> tuple[PreRollTerms, Callable[[], PreRoll]]:
        """Empty the buffer now, and hand out what ``drain`` would: its terms at once, the
        ``PreRoll`` from the function returned, which copies the payloads when called.

        The copies are of the arena as it is now, which the next ``push``, ``clear``, ``drain``
        or ``release`` would rewrite or give back: each of those makes them first. So a camera can
        show that it is recording before it pays for the copies (30 s of video is thousands of
        packets and tens of megabytes).
        """
        self._settle_lent()
        terms = self.terms()
        records = self._records[self._held_slots()]  # a copy (fancy indexing), unlike the arena
        self._counts["drained_packets"] += len(records)
        self._reset()
        made: list[PreRoll] = []

        def take() -> PreRoll:
            if not made:
                if self._lent is take:
                    self._lent = None
                packets = tuple(
                    BufferedPacket(
                        Packet(Stream(stream), index, pts, duration, keyframe, size),
                        self._payload_at(start, size),
                    )
                    for stream, keyframe, index, pts, duration, size, start in records.tolist()
                )
                made.append(
                    PreRoll(
                        packets, terms.requested_s, terms.delivered_s, terms.continuous, terms.limit
                    )
                )
            return made[0]

        self._lent = take
        return terms, take

    def _settle_lent(self) -> None:
        """Make the copies of a ``drain_later`` not yet taken, before the arena changes."""
        if self._lent is not None:
            self._lent()

    def clear(self) -> None:
        """Discard everything (sleep, dock, power-off: the camera keeps no buffer then)."""
        self._settle_lent()
        self._counts["cleared_packets"] += len(self)
        self._reset()

    def packets(self) -> list[Packet]:
        """The buffered packets' metadata in pts order, without draining or copying payloads."""
        return [packet for packet, _ in self._held()]

    def _held(self) -> Iterator[tuple[Packet, int]]:
        for stream, keyframe, index, pts, duration, size, start in self._records[
            self._held_slots()
        ].tolist():
            yield Packet(Stream(stream), index, pts, duration, keyframe, size), start

    def _held_slots(self) -> npt.NDArray[np.int64]:
        return np.arange(self._rec_head, self._rec_tail, dtype=np.int64) % self._slots

    def _payload_at(self, start: int, size: int) -> bytes:
        offset = start % self._cap
        end = offset + size
        if end <= self._cap:
            return bytes(self._view[offset:end])
        return bytes(self._view[offset:]) + bytes(self._view[: end - self._cap])

    def _limit(self) -> PreRollLimit:
        if self.delivered_s >= self._config.seconds:
            return PreRollLimit.NONE
        return PreRollLimit.CAPACITY if self._capacity_hit else PreRollLimit.HISTORY

    # --- observing ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._rec_tail - self._rec_head

    @property
    def allocated(self) -> bool:
        """Whether the arena and the index are allocated (``release`` gives them back)."""
        return self._allocated

    @property
    def first_pts_s(self) -> float | None:
        """Pts of the oldest held packet (a video keyframe), None when empty."""
        if self._rec_tail == self._rec_head:
            return None
        return float(self._pts[self._rec_head % self._slots])

    @property
    def config(self) -> PreEventBufferConfig:
        """The bounds this buffer was made with."""
        return self._config

    @property
    def requested_s(self) -> float:
        """The configured pre-roll."""
        return self._config.seconds

    @property
    def delivered_s(self) -> float:
        """Pre-roll a drain would deliver now: first keyframe's pts to the newest packet's end."""
        if self._rec_tail == self._rec_head:
            return 0.0
        return self._end_s - float(self._pts[self._rec_head % self._slots])

    @property
    def bytes_used(self) -> int:
        """Payload bytes held (never more than ``max_bytes``)."""
        return self._byte_tail - self._byte_head

    @property
    def audio_packets(self) -> int:
        """Audio packets held."""
        held = self._records["stream"][self._held_slots()]
        return int(np.count_nonzero(held == Stream.AUDIO))

    @property
    def video_packets(self) -> int:
        """Video packets held."""
        return len(self) - self.audio_packets

    @property
    def awaiting_keyframe(self) -> bool:
        """True when the next video packet is kept only if it is a keyframe."""
        return not self._gop_open

    @property
    def dropped_packets(self) -> int:
        """Packets dropped because a single packet was larger than the whole arena."""
        return self._counts["dropped_packets"]

    @property
    def dropped_bytes(self) -> int:
        """Bytes of the packets counted in ``dropped_packets``."""
        return self._counts["dropped_bytes"]

    def stats(self) -> BufferStats:
        """A snapshot of the counters."""
        return BufferStats(**self._counts)
