"""The pre-event buffer: trimming rule, bounds, loss reporting, payload integrity, allocations.

The stateful test drives the buffer and a plain-list reference model of the documented rule
(docs/camera.md) with the same generated stream, and compares them after every step.
"""

from __future__ import annotations

import math
import tracemalloc
from collections import Counter
from dataclasses import asdict, replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from device.errors import ConfigError
from device.packets import Packet, Stream
from device.prebuffer import PreEventBuffer, PreEventBufferConfig, PreRollLimit, PushResult
from sim.media import VIDEO_PRESETS, AudioProfile, MediaSource, VideoProfile
from tests.fuzz import STATEFUL_EXAMPLES

_LOSSES = {PushResult.OVERSIZE, PushResult.OVERFLOW}
_FATES = {  # the counters that, with the held packets, account for every pushed packet
    "skipped_audio",
    "awaiting_keyframe",
    "dropped_packets",
    "overflow_packets",
    "trimmed_packets",
    "evicted_packets",
    "drained_packets",
    "cleared_packets",
}


def _is_key(packet: Packet) -> bool:
    return packet.stream is Stream.VIDEO and packet.keyframe


class Reference:
    """The documented rule on a plain list, written for clarity rather than speed."""

    def __init__(self, config: PreEventBufferConfig) -> None:
        self.config = config
        self.held: list[Packet] = []
        self.gop_open = False
        self.capacity_hit = False
        self.counts: Counter[str] = Counter()

    def _second_keyframe(self) -> int | None:
        return next((i for i in range(1, len(self.held)) if _is_key(self.held[i])), None)

    def _cut(self, bucket: str) -> None:
        cut = self._second_keyframe()
        gone, self.held = self.held[: cut or len(self.held)], self.held[cut or len(self.held) :]
        self.gop_open = self.gop_open and bool(self.held)
        self.counts[f"{bucket}_packets"] += len(gone)
        self.counts[f"{bucket}_bytes"] += sum(p.size for p in gone)

    def _refuse(self, packet: Packet, bucket: str, result: PushResult) -> PushResult:
        self.gop_open = self.gop_open and packet.stream is Stream.AUDIO
        self.capacity_hit = True
        self.counts[f"{bucket}_packets"] += 1
        self.counts[f"{bucket}_bytes"] += packet.size
        return result

    def push(self, packet: Packet) -> PushResult:
        self.counts["pushed_packets"] += 1
        self.counts["pushed_bytes"] += packet.size
        video = packet.stream is Stream.VIDEO
        if not video and not self.config.keep_audio:
            self.counts["skipped_audio"] += 1
            return PushResult.SKIPPED_AUDIO
        if packet.size > self.config.max_bytes:
            return self._refuse(packet, "dropped", PushResult.OVERSIZE)
        if not (packet.keyframe or self.gop_open if video else self.held):
            self.counts["awaiting_keyframe"] += 1
            return PushResult.AWAITING_KEYFRAME
        while (
            sum(p.size for p in self.held) + packet.size > self.config.max_bytes
            or len(self.held) == self.config.packet_capacity
        ):
            if self._second_keyframe() is None and not _is_key(packet):
                return self._refuse(packet, "overflow", PushResult.OVERFLOW)
            self._cut("evicted")
            self.counts["evicted_gops"] += 1
            self.capacity_hit = True
        self.held.append(packet)
        self.gop_open = self.gop_open or _is_key(packet)
        while (cut := self._second_keyframe()) is not None and (
            packet.end_s - self.held[cut].pts_s >= self.config.seconds
        ):
            self._cut("trimmed")
        return PushResult.STORED

    @property
    def delivered_s(self) -> float:
        return self.held[-1].end_s - self.held[0].pts_s if self.held else 0.0

    def limit(self) -> PreRollLimit:
        if self.delivered_s >= self.config.seconds:
            return PreRollLimit.NONE
        return PreRollLimit.CAPACITY if self.capacity_hit else PreRollLimit.HISTORY

    def reset(self, bucket: str) -> None:
        self.counts[bucket] += len(self.held)
        self.held, self.gop_open, self.capacity_hit = [], False, False


def _allowance_s(relevant: list[Packet], config: PreEventBufferConfig) -> float:
    """Longest span from a video keyframe to the newest packet that fits the buffer's bounds."""
    used, start = 0, None
    for count, packet in enumerate(reversed(relevant), start=1):
        used += packet.size
        if used > config.max_bytes or count > config.packet_capacity:
            break
        start = packet.pts_s if _is_key(packet) else start
    return 0.0 if start is None else relevant[-1].end_s - start


videos = st.builds(
    VideoProfile,
    fps=st.sampled_from([5.0, 8.0, 12.5, 16.0, 24.0, 30.0]),  # 8, 16: exact pts, exact ties
    bitrate_bps=st.integers(10_000, 2_000_000),
    gop_frames=st.integers(1, 40),
    i_to_p_ratio=st.floats(1.0, 10.0),
    size_cv=st.floats(0.0, 0.5),
)
audios = st.builds(
    AudioProfile,
    frame_duration_s=st.sampled_from([0.02, 0.04, 0.064]),
    bitrate_bps=st.integers(6_000, 64_000),
    enabled=st.booleans(),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[VideoProfile, AudioProfile, PreEventBufferConfig]:
    """A stream and a buffer sized relative to its GOPs, from far too small to roomy."""
    video, audio = draw(videos), draw(audios)
    keep_audio = draw(st.booleans())
    gop_bytes = video.bitrate_bps / 8 * video.gop_duration_s
    if keep_audio and audio.enabled:
        gop_bytes += audio.bitrate_bps / 8 * video.gop_duration_s
    # From far below one packet (oversize drops) through one GOP (overflows) to roomy.
    factor = draw(st.one_of(st.floats(0.01, 0.5), st.floats(0.5, 2.0), st.floats(2.0, 12.0)))
    max_bytes = max(1, int(factor * gop_bytes))
    config = PreEventBufferConfig(
        seconds=draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0.0, 4.0))),
        max_bytes=max_bytes,
        keep_audio=keep_audio,
        max_packets=draw(st.one_of(st.none(), st.none(), st.integers(1, 400))),
    )
    return video, audio, config


class BufferMachine(RuleBasedStateMachine):
    """Random pushes, sleeps, clears and drains against the reference model."""

    source: MediaSource
    buffer: PreEventBuffer
    model: Reference

    @initialize(seed=st.integers(0, 2**16), scenario=scenarios(), fill=st.integers(0, 600))
    def setup(
        self,
        seed: int,
        scenario: tuple[VideoProfile, AudioProfile, PreEventBufferConfig],
        fill: int,
    ) -> None:
        video, audio, config = scenario
        self.source = MediaSource(seed, "cam-s", video, audio)
        self.buffer = PreEventBuffer(config)
        self.model = Reference(config)
        self.relevant: list[Packet] = []  # packets the buffer could keep since it last emptied
        self.newest_end = -math.inf
        self.lossless = True
        self.drained: set[tuple[Stream, int]] = set()
        # Hypothesis favours short runs; start from a buffer that has seen some history.
        self.push(fill)

    @rule(count=st.integers(1, 150))
    def push(self, count: int) -> None:
        for _ in range(count):
            packet = self.source.next_packet()
            result = self.buffer.push(packet, self.source)
            assert result == self.model.push(packet)
            event(result.value)
            if result is not PushResult.SKIPPED_AUDIO:
                self.relevant.append(packet)
                self.newest_end = max(self.newest_end, packet.end_s)
            self.lossless = self.lossless and result not in _LOSSES

    def _emptied(self, bucket: str) -> None:
        self.model.reset(bucket)
        self.relevant, self.lossless, self.newest_end = [], True, -math.inf

    @rule(seconds=st.floats(0.0, 20.0))
    def sleep(self, seconds: float) -> None:
        self.buffer.clear()
        self._emptied("cleared_packets")
        self.source.skip_to(self.source.next_pts_s + seconds)

    @rule()
    def clear(self) -> None:
        self.buffer.clear()
        self._emptied("cleared_packets")

    @rule()
    def drain(self) -> None:
        preroll = self.buffer.drain()
        assert [b.packet for b in preroll.packets] == self.model.held
        for item in preroll.packets:
            assert item.payload == self.source.payload(item.packet)
            assert self.source.check_payload(item.packet, item.payload)
        keys = {(b.packet.stream, b.packet.index) for b in preroll.packets}
        assert len(keys) == len(preroll.packets)
        event(f"drain {preroll.limit.value}")
        assert not keys & self.drained
        self.drained |= keys
        assert preroll.requested_s == self.model.config.seconds
        assert preroll.delivered_s == self.model.delivered_s
        assert preroll.continuous == self.model.gop_open
        assert preroll.limit is self.model.limit()
        self._emptied("drained_packets")

    @invariant()
    def matches_the_model(self) -> None:
        buffer, model = self.buffer, self.model
        assert buffer.packets() == model.held
        assert buffer.bytes_used == sum(p.size for p in model.held) <= model.config.max_bytes
        assert len(buffer) <= model.config.packet_capacity
        assert buffer.delivered_s == model.delivered_s
        assert buffer.awaiting_keyframe == (not model.gop_open)
        stats = buffer.stats()
        assert {k: v for k, v in asdict(stats).items() if v} == +model.counts
        fates = [v for k, v in asdict(stats).items() if k in _FATES]
        assert len(buffer) + sum(fates) == stats.pushed_packets  # nothing lost or counted twice

    @invariant()
    def delivers_within_one_gop(self) -> None:
        held, config = self.model.held, self.model.config
        if held:
            assert _is_key(held[0])
        if not self.relevant:
            return
        gop = self.source.video.gop_duration_s
        # An audio frame may end after the next keyframe's pts (and stay until that keyframe).
        audio = self.source.audio.frame_duration_s if config.keep_audio else 0.0
        history = self.newest_end - self.relevant[0].pts_s
        floor = min(config.seconds, history, _allowance_s(self.relevant, config))
        delivered = self.buffer.delivered_s
        assert delivered >= floor - gop - 1e-9
        assert delivered <= history + 1e-9
        if self.lossless:  # a loss can leave a hole inside the head GOP's span
            assert delivered < config.seconds + gop + audio + 1e-9


BufferMachine.TestCase.settings = settings(
    max_examples=STATEFUL_EXAMPLES, stateful_step_count=50, deadline=None
)
test_buffer_matches_reference = BufferMachine.TestCase


# --- examples ------------------------------------------------------------------------------


def _feed(buffer: PreEventBuffer, source: MediaSource, until_s: float) -> list[PushResult]:
    return [buffer.push(packet, source) for packet in source.packets_until(until_s)]


def _packet(index: int, size: int, *, key: bool = False, fps: float = 10.0) -> Packet:
    return Packet(Stream.VIDEO, index, index / fps, 1 / fps, keyframe=key, size=size)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": 121}, "seconds"),
        ({"seconds": math.nan}, "seconds"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"keep_audio": "yes"}, "keep_audio"),
        ({"max_packets": 0}, "max_packets"),
        ({"max_packets": True}, "max_packets"),
    ],
)
def test_bad_config_names_the_field_and_range(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"prebuffer\.{field} must be "):
        PreEventBufferConfig(**kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    config = PreEventBufferConfig()
    assert (config.seconds, config.keep_audio) == (30.0, False)
    assert config.max_bytes >= 75e6 + VIDEO_PRESETS["1080p30"].bitrate_bps / 8  # 30 s + a GOP
    assert config.packet_capacity == (30 + 10) * 220
    assert PreEventBufferConfig(max_packets=7).packet_capacity == 7


def test_steady_720p_delivers_the_request_within_one_gop() -> None:
    source = MediaSource(1, "cam-1", VIDEO_PRESETS["720p30"])
    buffer = PreEventBuffer()
    _feed(buffer, source, 95.5)
    held = buffer.packets()
    assert held[0].keyframe
    assert all(p.stream is Stream.VIDEO for p in held)
    assert 30.0 <= buffer.delivered_s < 30.0 + source.video.gop_duration_s
    preroll = buffer.drain()
    assert (preroll.limit, preroll.continuous, preroll.requested_s) == (
        PreRollLimit.NONE,
        True,
        30.0,
    )
    assert all(source.check_payload(b.packet, b.payload) for b in preroll.packets)
    assert (len(buffer), buffer.bytes_used, buffer.delivered_s) == (0, 0, 0.0)


def test_trim_boundary_is_inclusive() -> None:
    # fps 8 makes every pts exact: the head GOP goes as soon as the rest covers exactly 2 s.
    source = MediaSource(1, "cam-1", VideoProfile(fps=8.0, gop_frames=8))
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=2.0))
    _feed(buffer, source, 2.9)  # frames to pts 2.875, end 3.0
    assert buffer.delivered_s == 2.0
    assert buffer.packets()[0].pts_s == 1.0


def test_short_history_is_reported_as_such() -> None:
    source = MediaSource(1, "cam-1")
    buffer = PreEventBuffer()
    _feed(buffer, source, 10.0)
    preroll = buffer.drain()
    assert preroll.delivered_s == pytest.approx(10.0)
    assert preroll.limit is PreRollLimit.HISTORY


def test_byte_bound_trims_whole_gops_and_says_so() -> None:
    source = MediaSource(1, "cam-1", VIDEO_PRESETS["1080p30"])
    buffer = PreEventBuffer(PreEventBufferConfig(max_bytes=20_000_000))
    _feed(buffer, source, 60.0)
    stats = buffer.stats()
    assert stats.evicted_gops > 0
    assert stats.evicted_bytes > 0
    assert buffer.bytes_used <= 20_000_000
    assert buffer.packets()[0].keyframe
    seconds_that_fit = 20_000_000 / (source.video.bitrate_bps / 8)
    assert seconds_that_fit - 1.0 <= buffer.delivered_s <= seconds_that_fit  # one GOP is 1 s
    assert buffer.drain().limit is PreRollLimit.CAPACITY


def test_audio_is_kept_on_request_and_never_before_the_first_keyframe() -> None:
    source = MediaSource(1, "cam-1")
    plain = PreEventBuffer(PreEventBufferConfig(seconds=2.0))
    with_audio = PreEventBuffer(PreEventBufferConfig(seconds=2.0, keep_audio=True))
    source.skip_to(0.5)  # start mid-GOP: audio and P-frames come before any keyframe
    for packet in source.packets_until(7.3):
        plain.push(packet, source)
        with_audio.push(packet, source)
    assert plain.audio_packets == 0
    assert plain.stats().skipped_audio > 0
    held = with_audio.packets()
    assert held[0].keyframe
    assert held[0].stream is Stream.VIDEO
    assert with_audio.audio_packets > 0
    assert min(p.pts_s for p in held if p.stream is Stream.AUDIO) >= held[0].pts_s
    assert with_audio.video_packets == plain.video_packets == len(plain)


def test_a_packet_larger_than_the_arena_is_dropped_visibly() -> None:
    source = MediaSource(1, "cam-1")
    buffer = PreEventBuffer(PreEventBufferConfig(max_bytes=1_000))
    sizes = [(100, True), (100, False), (5_000, False), (100, False), (100, True)]
    results = [buffer.push(_packet(i, s, key=k), source) for i, (s, k) in enumerate(sizes)]
    assert results == [
        PushResult.STORED,
        PushResult.STORED,
        PushResult.OVERSIZE,
        PushResult.AWAITING_KEYFRAME,
        PushResult.STORED,
    ]
    assert (buffer.dropped_packets, buffer.dropped_bytes) == (1, 5_000)
    assert [p.index for p in buffer.packets()] == [0, 1, 4]  # a hole, visible by index
    assert buffer.drain().limit is PreRollLimit.CAPACITY


def test_a_gop_larger_than_the_arena_overflows_then_recovers() -> None:
    source = MediaSource(1, "cam-1")
    buffer = PreEventBuffer(PreEventBufferConfig(max_bytes=1_000))
    sizes = [(400, True), (400, False), (400, False), (400, False), (400, True)]
    results = [buffer.push(_packet(i, s, key=k), source) for i, (s, k) in enumerate(sizes)]
    assert results[2:4] == [PushResult.OVERFLOW, PushResult.AWAITING_KEYFRAME]
    assert results[4] is PushResult.STORED
    assert [p.index for p in buffer.packets()] == [4]
    stats = buffer.stats()
    assert (stats.overflow_packets, stats.evicted_gops) == (1, 1)


def test_a_refused_tail_means_the_recording_waits_for_a_keyframe() -> None:
    source = MediaSource(1, "cam-1")
    buffer = PreEventBuffer(PreEventBufferConfig(max_bytes=1_000))
    for index, size in enumerate([400, 400, 400]):
        buffer.push(_packet(index, size, key=index == 0), source)
    assert buffer.awaiting_keyframe
    assert not buffer.drain().continuous


def test_packets_wrapping_round_the_arena_come_back_intact() -> None:
    source = MediaSource(2, "cam-2", VideoProfile(bitrate_bps=400_000))
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=5.0, max_bytes=30_011, keep_audio=True))
    _feed(buffer, source, 40.0)  # many laps of a prime-sized arena
    preroll = buffer.drain()
    assert preroll.packets
    assert all(b.payload == source.payload(b.packet) for b in preroll.packets)


def test_pushes_must_be_in_pts_order_until_emptied() -> None:
    source = MediaSource(1, "cam-1")
    buffer = PreEventBuffer()
    buffer.push(_packet(5, 10, key=True), source)
    with pytest.raises(ValueError, match="before"):
        buffer.push(_packet(4, 10, key=True), source)
    buffer.clear()
    assert buffer.push(_packet(4, 10, key=True), source) is PushResult.STORED
    buffer.drain()
    assert buffer.push(_packet(3, 10), source) is PushResult.AWAITING_KEYFRAME


def test_zero_seconds_keeps_only_the_current_gop() -> None:
    source = MediaSource(1, "cam-1", VideoProfile(gop_frames=15))
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=0.0))
    _feed(buffer, source, 10.2)
    held = buffer.packets()
    assert [p.keyframe for p in held].count(True) == 1
    assert held[0].index == 300


@settings(max_examples=25, deadline=None)
@given(scenario=scenarios(), event_s=st.floats(0.0, 40.0), seed=st.integers(0, 99))
def test_warm_start_from_a_gop_before_the_window_equals_feeding_all_along(
    scenario: tuple[VideoProfile, AudioProfile, PreEventBufferConfig], event_s: float, seed: int
) -> None:
    video, audio, config = scenario
    # Any GOP fits (sizes are clipped at 3x their mean), so nothing is ever refused.
    worst_gop = 3 * (video.i_frame_mean_bytes + video.gop_frames * video.p_frame_mean_bytes)
    config = replace(config, max_bytes=int(worst_gop + 3 * audio.bitrate_bps), max_packets=None)
    always = PreEventBuffer(config)
    _feed(always, MediaSource(seed, "cam", video, audio), event_s)
    warm, source = PreEventBuffer(config), MediaSource(seed, "cam", video, audio)
    source.skip_to(source.gop_start_s(event_s - config.seconds - video.gop_duration_s))
    _feed(warm, source, event_s)
    assert warm.packets() == always.packets()
    assert warm.delivered_s == always.delivered_s


def test_push_does_not_allocate_per_packet() -> None:
    source = MediaSource(3, "cam-3", VideoProfile(bitrate_bps=200_000))
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=3.0, max_bytes=200_000, keep_audio=True))
    _feed(buffer, source, 30.0)  # warm up: several laps of the arena, full index
    packets = [source.next_packet() for _ in range(10_000)]
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for packet in packets:
            buffer.push(packet, source)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Even 8 bytes kept per packet would be 80 kB; temporaries are at most one payload (< 10 kB).
    assert current - base < 2_000
    assert peak - base < 16_000
    assert buffer.stats().trimmed_packets > 0
