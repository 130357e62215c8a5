"""The simulated encoder: video and audio packets with realistic sizes and cheap, checkable bytes.

Packet sizes are drawn from a numpy ``Generator`` seeded from ``(seed, device_id, stream, chunk)``
through ``hashlib``; a chunk holds ``SIZE_CHUNK`` consecutive packets, so any packet can be made
(and any stretch skipped) without replaying the ones before it. Payloads are a 24-byte header
(magic, stream, flags, size, index, keyed tag) followed by filler copied out of one shared random
block, so making bytes costs about a ``memcpy`` and a receiver can regenerate them to check content.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final

import numpy as np

from device.errors import ConfigError
from device.packets import Packet, Stream
from device.validate import check_number as _check

HEADER_BYTES = 24
"""Bytes of the payload header (2 magic + 14 tagged fields + 8 tag); tiny packets truncate it."""

BLOCK_BYTES = 4 * 1024 * 1024
"""Size of the shared random block payload filler is copied from."""

SIZE_CHUNK = 4096  # packets per independently seeded batch of sizes (unit of random access)

_MAGIC = b"BW"
_TAGGED = struct.Struct("<BBIQ")  # stream, flags, size, index: the fields the tag covers
_TAG = struct.Struct("<Q")  # keyed 64-bit tag: the rest of the header
_HEADER = struct.Struct("<2sBBIQQ")  # magic, the tagged fields, the tag: the whole header
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_ODD = 0xD6E8FEB86659FD93


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: a cheap keyed tag. It tells devices and packets apart; it is not
    a MAC (nothing here is secret) and costs a fraction of a keyed hash per packet."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


_MAX_PAYLOAD = 2**32 - 1  # the header stores the size as an unsigned 32-bit field
_FACTOR_CLIP = (0.2, 3.0)  # bounds on a frame's size relative to its mean (no absurd outliers)


def derive_seed(seed: int, *labels: str | int) -> int:
    """Derive a 128-bit seed from a root seed and labels (device, stream, purpose...).

    Uses ``hashlib`` with length-prefixed parts, so it is stable across runs and processes (unlike
    ``hash()``) and ``("ab", "c")`` never collides with ``("a", "bc")``.
    """
    digest = hashlib.blake2b(digest_size=16, person=b"bwc-sim-seed")
    for part in (seed, *labels):
        raw = f"{type(part).__name__}:{part}".encode()
        digest.update(len(raw).to_bytes(4, "little") + raw)
    return int.from_bytes(digest.digest(), "little")


def derive_rng(seed: int, *labels: str | int) -> np.random.Generator:
    """A numpy ``Generator`` seeded with ``derive_seed(seed, *labels)``."""
    return np.random.default_rng(derive_seed(seed, *labels))


@dataclass(frozen=True, slots=True)
class VideoProfile:
    """What the video encoder produces.

    ``gop_frames`` is the keyframe interval; an I-frame is ``i_to_p_ratio`` times the mean P-frame,
    and every frame's size varies around its mean with coefficient of variation ``size_cv``. The
    means are set so that the long-run bitrate is ``bitrate_bps``.
    """

    resolution: str = "720p"
    fps: float = 30.0
    bitrate_bps: int = 6_500_000
    gop_frames: int = 30
    i_to_p_ratio: float = 5.0
    size_cv: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, str) or not 0 < len(self.resolution) <= 32:
            label = f"a label of 1 to 32 characters, got {self.resolution!r}"
            raise ConfigError(f"VideoProfile.resolution must be {label}")
        _check("VideoProfile", "fps", self.fps, 1.0, 120.0, integer=False)
        _check("VideoProfile", "bitrate_bps", self.bitrate_bps, 10_000, 200_000_000, integer=True)
        _check("VideoProfile", "gop_frames", self.gop_frames, 1, 1200, integer=True)
        _check("VideoProfile", "i_to_p_ratio", self.i_to_p_ratio, 1.0, 50.0, integer=False)
        # Above 0.5 the clipping of outliers would bias the mean bitrate by more than 1 %.
        _check("VideoProfile", "size_cv", self.size_cv, 0.0, 0.5, integer=False)

    @property
    def frame_duration_s(self) -> float:
        """Duration of one frame."""
        return 1.0 / self.fps

    @property
    def gop_duration_s(self) -> float:
        """Time between keyframes."""
        return self.gop_frames / self.fps

    @property
    def p_frame_mean_bytes(self) -> float:
        """Mean size of a P-frame (solves G * mean_frame = I + (G - 1) * P with I = ratio * P)."""
        mean_frame = self.bitrate_bps / 8.0 / self.fps
        return self.gop_frames * mean_frame / (self.i_to_p_ratio + self.gop_frames - 1)

    @property
    def i_frame_mean_bytes(self) -> float:
        """Mean size of an I-frame (keyframe)."""
        return self.i_to_p_ratio * self.p_frame_mean_bytes

    @property
    def bytes_per_hour(self) -> float:
        """Long-run storage use of this stream."""
        return self.bitrate_bps / 8.0 * 3600.0


VIDEO_PRESETS: Mapping[str, VideoProfile] = MappingProxyType(
    {
        # 1.4-5 GB/h is the typical 720p range, 7-9 GB/h at 1080p30 (docs/camera.md).
        "720p30-low": VideoProfile(resolution="720p", bitrate_bps=3_150_000),  # ~1.4 GB/h
        "720p30": VideoProfile(resolution="720p", bitrate_bps=6_500_000),  # ~2.9 GB/h
        "720p30-high": VideoProfile(resolution="720p", bitrate_bps=11_000_000),  # ~5 GB/h
        "1080p30": VideoProfile(resolution="1080p", bitrate_bps=17_500_000),  # ~7.9 GB/h
    }
)
"""Named video profiles anchored on the workload sizes of real cameras."""


@dataclass(frozen=True, slots=True)
class AudioProfile:
    """What the audio encoder produces: constant-bitrate frames of ``frame_duration_s``."""

    frame_duration_s: float = 0.02
    bitrate_bps: int = 64_000
    enabled: bool = True

    def __post_init__(self) -> None:
        _check(
            "AudioProfile", "frame_duration_s", self.frame_duration_s, 0.0025, 0.2, integer=False
        )
        _check("AudioProfile", "bitrate_bps", self.bitrate_bps, 6_000, 1_000_000, integer=True)
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"AudioProfile.enabled must be true or false, got {self.enabled!r}")

    @property
    def frame_bytes(self) -> float:
        """Mean bytes per frame (sizes alternate so the long-run bitrate is exact)."""
        return self.bitrate_bps / 8.0 * self.frame_duration_s


@lru_cache(maxsize=4)
def _filler_block(seed: int) -> bytes:
    # One block per seed, shared by every source of that seed (and by every camera of a fleet,
    # which passes one ``filler_seed``). Devices differ through their keyed tags and offsets.
    return derive_rng(seed, "payload-filler").bytes(BLOCK_BYTES)


def _first_index_at_or_after(t_s: float, period_s: float, pts: Callable[[int], float]) -> int:
    """Smallest index whose pts is >= t_s, exact with respect to ``pts`` despite float rounding."""
    index = max(0, math.ceil(t_s / period_s))
    while index > 0 and pts(index - 1) >= t_s:
        index -= 1
    while pts(index) < t_s:
        index += 1
    return index


class MediaSource:
    """A camera's encoder: interleaved video and audio packets in pts order, and their payloads.

    The media clock starts at 0 with packet 0 of each stream. Everything is a pure function of
    ``(seed, device_id, profiles)``: iterating, skipping and random access give the same packets,
    and payloads depend only on ``(seed, device_id, packet)``, so a receiver can check content with
    an equal source. Implements ``device.packets.PayloadSource``. ``seed``, ``device_id``,
    ``video`` and ``audio`` are read-only attributes.

    Payload filler is copied out of a 4 MiB block drawn from ``filler_seed`` (default: ``seed``),
    made at the first payload and cached per seed: a fleet gives its cameras one ``filler_seed``
    so they share one block (their payloads still differ by their keyed tags and offsets), and a
    camera that never records never makes one.
    """

    def __init__(
        self,
        seed: int,
        device_id: str,
        video: VideoProfile | None = None,
        audio: AudioProfile | None = None,
        *,
        filler_seed: int | None = None,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"MediaSource.seed must be an integer >= 0, got {seed!r}")
        if filler_seed is not None and (
            not isinstance(filler_seed, int) or isinstance(filler_seed, bool) or filler_seed < 0
        ):
            raise ConfigError(
                f"MediaSource.filler_seed must be an integer >= 0 or None, got {filler_seed!r}"
            )
        if not isinstance(device_id, str) or not device_id:
            raise ConfigError(
                f"MediaSource.device_id must be a non-empty string, not {device_id!r}"
            )
        self.seed: Final = seed
        self.device_id: Final = device_id
        self.video: Final = video if video is not None else VideoProfile()
        self.audio: Final = audio if audio is not None else AudioProfile()
        self._filler_seed = seed if filler_seed is None else filler_seed
        # Made at the first payload: a source whose packets are only timed and sized (a camera
        # that never records) never holds the block.
        self._block_view: memoryview | None = None
        self._tag_keys = {  # keyed per device and stream
            s: derive_seed(seed, device_id, s.name, "tag-key") & _MASK64 for s in Stream
        }
        self._next_video = self._next_audio = 0
        self._video_next_pts = self._audio_next_pts = 0.0
        self._set_next(Stream.VIDEO, 0)
        self._set_next(Stream.AUDIO, 0)
        self._chunk_id = -1
        self._chunk_sizes: list[int] = []

    def packet_at(self, stream: Stream, index: int) -> Packet:
        """The packet ``index`` of ``stream`` (random access; does not move the iterator)."""
        if index < 0:
            raise ValueError(f"packet index must be >= 0, got {index}")
        if stream is Stream.VIDEO:
            video = self.video
            return Packet.trusted(
                Stream.VIDEO,
                index,
                self._video_pts(index),
                video.frame_duration_s,
                index % video.gop_frames == 0,
                self._video_size(index),
            )
        per_frame = self.audio.frame_bytes
        size = math.floor((index + 1) * per_frame) - math.floor(index * per_frame)
        return Packet.trusted(
            Stream.AUDIO,
            index,
            self._audio_pts(index),
            self.audio.frame_duration_s,
            True,  # noqa: FBT003 - audio frames are all keyframes
            size,
        )

    def next_index(self, stream: Stream) -> int:
        """Index of the next packet of ``stream`` that ``next_packet`` will yield."""
        return self._next_video if stream is Stream.VIDEO else self._next_audio

    @property
    def next_pts_s(self) -> float:
        """Presentation time of the next packet ``next_packet`` will return."""
        return min(self._video_next_pts, self._audio_next_pts)

    def next_packet(self) -> Packet:
        """Return the next packet in pts order; at equal pts video comes before audio."""
        # The hot path of every simulated recording: cached next pts, no dict or enum lookups.
        if self._audio_next_pts < self._video_next_pts:
            index = self._next_audio
            self._set_next(Stream.AUDIO, index + 1)
            return self.packet_at(Stream.AUDIO, index)
        index = self._next_video
        self._set_next(Stream.VIDEO, index + 1)
        return self.packet_at(Stream.VIDEO, index)

    def packets_until(self, t_s: float) -> Iterator[Packet]:
        """Yield (lazily) every next packet whose pts is before ``t_s``."""
        while min(self._video_next_pts, self._audio_next_pts) < t_s:
            yield self.next_packet()

    def skip_to(self, t_s: float) -> int:
        """Advance without making packets so the next one has pts >= ``t_s``; O(1) in the gap.

        Use it while the camera is off or asleep. Never moves backwards. Returns how many packets
        were skipped.
        """
        skipped = 0
        for stream, period, pts in (
            (Stream.VIDEO, self.video.frame_duration_s, self._video_pts),
            (Stream.AUDIO, self.audio.frame_duration_s, self._audio_pts),
        ):
            first = _first_index_at_or_after(t_s, period, pts)
            current = self.next_index(stream)
            if first > current:
                skipped += first - current
                self._set_next(stream, first)
        return skipped

    def seek(self, t_s: float) -> None:
        """Move, backwards too, so the next packet of each stream is the first with pts >= ``t_s``.

        Packets are a pure function of their index, so packets made again are the same.
        """
        self._set_next(Stream.VIDEO, _first_index_at_or_after(t_s, *self._timing(Stream.VIDEO)))
        self._set_next(Stream.AUDIO, _first_index_at_or_after(t_s, *self._timing(Stream.AUDIO)))

    def _timing(self, stream: Stream) -> tuple[float, Callable[[int], float]]:
        if stream is Stream.VIDEO:
            return self.video.frame_duration_s, self._video_pts
        return self.audio.frame_duration_s, self._audio_pts

    def gop_start_s(self, t_s: float) -> float:
        """Pts of the keyframe that opens the GOP containing time ``t_s`` (0.0 before the start).

        Feeding a pre-event buffer of ``seconds`` from ``gop_start_s(t - seconds - gop)`` up to
        ``t`` leaves it exactly as if it had been fed all along (see docs/camera.md).
        """
        if t_s <= 0.0:
            return 0.0
        after = _first_index_at_or_after(t_s, self.video.frame_duration_s, self._video_pts)
        last = after if self._video_pts(after) == t_s else after - 1
        return self._video_pts(last - last % self.video.gop_frames)

    def _video_pts(self, index: int) -> float:
        return index / self.video.fps  # from the index, never accumulated: no drift

    def _audio_pts(self, index: int) -> float:
        return index * self.audio.frame_duration_s

    def _set_next(self, stream: Stream, index: int) -> None:
        if stream is Stream.VIDEO:
            self._next_video = index
            self._video_next_pts = self._video_pts(index)
        else:
            self._next_audio = index
            # A disabled stream never comes next: its next pts is infinitely far away.
            self._audio_next_pts = self._audio_pts(index) if self.audio.enabled else math.inf

    def _video_size(self, index: int) -> int:
        chunk, offset = divmod(index, SIZE_CHUNK)
        if chunk != self._chunk_id:
            self._chunk_sizes = self._video_chunk(chunk)
            self._chunk_id = chunk
        return self._chunk_sizes[offset]

    def _video_chunk(self, chunk: int) -> list[int]:
        video = self.video
        if video.size_cv >= 1e-4:  # below that the sizes are constant (and 1/cv**2 overflows)
            shape = 1.0 / video.size_cv**2  # gamma(k, 1/k) has mean 1 and CV 1/sqrt(k)
            rng = derive_rng(self.seed, self.device_id, Stream.VIDEO.name, "sizes", chunk)
            factors = np.clip(rng.gamma(shape, 1.0 / shape, SIZE_CHUNK), *_FACTOR_CLIP)
        else:
            factors = np.ones(SIZE_CHUNK)
        indices = np.arange(chunk * SIZE_CHUNK, (chunk + 1) * SIZE_CHUNK)
        key = indices % video.gop_frames == 0
        means = np.where(key, video.i_frame_mean_bytes, video.p_frame_mean_bytes)
        sizes: list[int] = np.maximum(1, np.rint(means * factors)).astype(np.int64).tolist()
        return sizes

    def payload(self, packet: Packet) -> bytes:
        """The packet's payload bytes (one copy).

        The recorder calls this for every packet it writes, so the common case (no wrap round
        the block) is spelled out here; ``_layout`` is the reference it must agree with.
        """
        size = packet.size
        if size > _MAX_PAYLOAD:
            raise ValueError(f"payloads are limited to {_MAX_PAYLOAD} bytes, got {size}")
        index, keyframe = packet.index, packet.keyframe
        tag = _mix64(
            self._tag_keys[packet.stream] ^ ((index * _GOLDEN + size * _ODD + keyframe) & _MASK64)
        )
        header = _HEADER.pack(_MAGIC, packet.stream, keyframe, size, index, tag)
        if size <= HEADER_BYTES:
            return header[:size]
        start = tag % BLOCK_BYTES
        end = start + size - HEADER_BYTES
        block = self._block_view
        if block is None:
            block = self._filler()
        if end > BLOCK_BYTES:
            layout, spans = self._layout(packet)
            return b"".join([layout, *(block[a:b] for a, b in spans)])
        return b"".join((header, block[start:end]))

    def write_payload(self, packet: Packet, out: memoryview) -> None:
        """Write the packet's payload into ``out`` (exactly ``packet.size`` bytes, format "B")."""
        if out.nbytes != packet.size:
            raise ValueError(f"out holds {out.nbytes} bytes, packet needs {packet.size}")
        header, spans = self._layout(packet)
        head = len(header)
        out[:head] = header
        block = self._filler()
        for a, b in spans:
            out[head : head + b - a] = block[a:b]
            head += b - a

    def check_payload(self, packet: Packet, data: bytes | bytearray | memoryview) -> bool:
        """True iff ``data`` is exactly the payload this source makes for ``packet``.

        Checks content only; compare ``packet`` with ``packet_at(stream, index)`` to also check
        that its timing and size are what the profile produces.
        """
        view = np.frombuffer(data, dtype=np.uint8)
        if view.size != packet.size or packet.size > _MAX_PAYLOAD:
            return False
        header, spans = self._layout(packet)
        head = len(header)
        if view[:head].tobytes() != header:
            return False
        block = np.frombuffer(self._filler(), dtype=np.uint8)
        for a, b in spans:
            if not np.array_equal(view[head : head + b - a], block[a:b]):
                return False
            head += b - a
        return True

    def _filler(self) -> memoryview:
        """The filler block (made, or taken from the per-seed cache, at the first call)."""
        if self._block_view is None:
            # Immutable bytes: read-only views, zero-copy.
            self._block_view = memoryview(_filler_block(self._filler_seed))
        return self._block_view

    def _layout(self, packet: Packet) -> tuple[bytes, list[tuple[int, int]]]:
        """The header (truncated for tiny packets) and the block spans that follow it."""
        if packet.size > _MAX_PAYLOAD:
            raise ValueError(f"payloads are limited to {_MAX_PAYLOAD} bytes, got {packet.size}")
        body = _TAGGED.pack(packet.stream, packet.keyframe, packet.size, packet.index)
        tag = _TAG.pack(
            _mix64(
                self._tag_keys[packet.stream]
                ^ ((packet.index * _GOLDEN + packet.size * _ODD + packet.keyframe) & _MASK64)
            )
        )
        header = (_MAGIC + body + tag)[: packet.size]
        spans: list[tuple[int, int]] = []
        remaining = packet.size - len(header)
        start = int.from_bytes(tag, "little") % BLOCK_BYTES  # the tag doubles as a keyed offset
        while remaining > 0:  # more than one span only when the filler wraps round the block
            take = min(remaining, BLOCK_BYTES - start)
            spans.append((start, start + take))
            remaining -= take
            start = 0
        return header, spans
