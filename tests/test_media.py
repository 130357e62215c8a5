"""The simulated encoder: determinism, bitrate, GOP structure, payload checks and fast skipping."""

from __future__ import annotations

import hashlib
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import ConfigError
from device.packets import Packet, Stream
from sim.media import (
    BLOCK_BYTES,
    HEADER_BYTES,
    SIZE_CHUNK,
    VIDEO_PRESETS,
    AudioProfile,
    MediaSource,
    VideoProfile,
    derive_seed,
)


def _take(source: MediaSource, count: int) -> list[Packet]:
    return [source.next_packet() for _ in range(count)]


def _bytes_per_second(packets: list[Packet], stream: Stream, seconds: float) -> float:
    return sum(p.size for p in packets if p.stream is stream) / seconds


def test_same_seed_and_device_give_the_same_packets_and_bytes() -> None:
    a, b = MediaSource(7, "cam-7"), MediaSource(7, "cam-7")
    packets = _take(a, 500)
    assert packets == _take(b, 500)
    assert [a.payload(p) for p in packets] == [b.payload(p) for p in packets]


def test_other_device_or_seed_gives_other_sizes_and_bytes() -> None:
    base = MediaSource(7, "cam-7")
    packets = _take(base, 200)
    for other in (MediaSource(7, "cam-8"), MediaSource(8, "cam-7")):
        assert [p.size for p in _take(other, 200)] != [p.size for p in packets]
        for packet in packets[:50]:  # same metadata, other device: other bytes
            assert other.payload(packet) != base.payload(packet)
            assert not other.check_payload(packet, base.payload(packet))


def test_pinned_output_does_not_change_silently() -> None:
    # Receivers regenerate payloads to check them: a change here breaks stored evidence checks,
    # so it must be deliberate (or a numpy release changed a distribution).
    assert derive_seed(7, "cam-7", "VIDEO") == 86305503363717196517064702665417496390
    source = MediaSource(7, "cam-7")
    packets = _take(source, 6)
    assert [(p.stream.name, p.index, p.size) for p in packets] == [
        ("VIDEO", 0, 128058),
        ("AUDIO", 0, 160),
        ("AUDIO", 1, 160),
        ("VIDEO", 1, 22620),
        ("AUDIO", 2, 160),
        ("AUDIO", 3, 160),
    ]
    digest = hashlib.sha256(b"".join(source.payload(p) for p in packets)).hexdigest()
    assert digest == "e2b09b8fa8d999ce34e6e81fa9e4ca083eee63f0f2f1bb8042cdbc14c2bba153"


def test_derived_seeds_keep_label_boundaries() -> None:
    assert derive_seed(1, "ab", "c") != derive_seed(1, "a", "bc")
    assert derive_seed(1, 2) != derive_seed(1, "2")


@pytest.mark.parametrize("name", sorted(VIDEO_PRESETS))
def test_mean_bitrate_matches_the_profile(name: str) -> None:
    source = MediaSource(3, "cam-3", VIDEO_PRESETS[name])
    seconds = 300.0
    packets = list(source.packets_until(seconds))
    video_bps = 8 * _bytes_per_second(packets, Stream.VIDEO, seconds)
    assert video_bps == pytest.approx(source.video.bitrate_bps, rel=0.02)
    audio_bps = 8 * _bytes_per_second(packets, Stream.AUDIO, seconds)
    assert audio_bps == pytest.approx(source.audio.bitrate_bps, rel=1e-3)


def test_presets_sit_in_the_documented_workload_ranges() -> None:
    gb_per_hour = {name: p.bytes_per_hour / 1e9 for name, p in VIDEO_PRESETS.items()}
    assert all(1.4 <= gb_per_hour[n] <= 5.0 for n in gb_per_hour if n.startswith("720p"))
    assert 7.0 <= gb_per_hour["1080p30"] <= 9.0
    thirty_seconds = VIDEO_PRESETS["1080p30"].bitrate_bps / 8 * 30
    assert 60e6 <= thirty_seconds <= 75e6  # "a 30 s buffer at 1080p is 60-75 MB"


def test_gop_structure_and_timing() -> None:
    profile = VideoProfile(fps=25.0, gop_frames=12, i_to_p_ratio=6.0, bitrate_bps=2_000_000)
    source = MediaSource(5, "cam-5", profile, AudioProfile(enabled=False))
    video = _take(source, 12 * 200)
    assert all(p.stream is Stream.VIDEO for p in video)
    assert [p.index for p in video] == list(range(len(video)))
    assert all(p.keyframe == (p.index % 12 == 0) for p in video)
    assert all(p.pts_s == p.index / 25.0 and p.duration_s == 1 / 25.0 for p in video)
    i_mean = sum(p.size for p in video if p.keyframe) / 200
    p_mean = sum(p.size for p in video if not p.keyframe) / (11 * 200)
    assert i_mean / p_mean == pytest.approx(6.0, rel=0.05)
    assert i_mean == pytest.approx(profile.i_frame_mean_bytes, rel=0.05)


def test_streams_interleave_in_pts_order_video_first_at_ties() -> None:
    source = MediaSource(1, "cam-1", VideoProfile(fps=25.0), AudioProfile(frame_duration_s=0.04))
    packets = _take(source, 1000)
    assert all(a.pts_s <= b.pts_s for a, b in itertools.pairwise(packets))
    ties = [(a, b) for a, b in itertools.pairwise(packets) if a.pts_s == b.pts_s]
    assert ties
    assert all(a.stream is Stream.VIDEO for a, _ in ties)
    assert all(p.keyframe for p in packets if p.stream is Stream.AUDIO)


def test_random_access_matches_iteration_across_size_chunks() -> None:
    source = MediaSource(2, "cam-2", audio=AudioProfile(enabled=False))
    iterated = _take(source, SIZE_CHUNK + 10)
    fresh = MediaSource(2, "cam-2", audio=AudioProfile(enabled=False))
    for index in (SIZE_CHUNK + 9, 0, SIZE_CHUNK - 1, SIZE_CHUNK, 17):
        assert fresh.packet_at(Stream.VIDEO, index) == iterated[index]


@settings(max_examples=40)
@given(t_s=st.floats(0.0, 1.5 * SIZE_CHUNK / 120.0), start=st.integers(0, 50))
def test_skip_to_equals_iterating_the_gap(t_s: float, start: int) -> None:
    # 120 fps crosses a size chunk within the range; 64 ms audio keeps the gap cheap to walk.
    video, audio = VideoProfile(fps=120.0), AudioProfile(frame_duration_s=0.064)
    walker, skipper = MediaSource(4, "cam-4", video, audio), MediaSource(4, "cam-4", video, audio)
    _take(walker, start)
    _take(skipper, start)
    gap = list(walker.packets_until(t_s))
    skipped = skipper.skip_to(t_s)
    assert skipped == len(gap)
    assert skipper.next_pts_s >= t_s
    assert _take(skipper, 20) == _take(walker, 20)
    assert skipper.skip_to(t_s - 1.0) == 0  # never backwards


def test_gop_start_is_the_keyframe_at_or_before() -> None:
    source = MediaSource(1, "cam-1", VideoProfile(fps=30.0, gop_frames=45))
    assert source.gop_start_s(-3.0) == 0.0
    assert source.gop_start_s(1.49) == 0.0
    assert source.gop_start_s(1.5) == 1.5
    assert source.gop_start_s(4.4) == 3.0


def test_check_payload_accepts_only_the_exact_bytes() -> None:
    source = MediaSource(9, "cam-9")
    packets = _take(source, 40)
    for packet, other in itertools.pairwise(packets):
        data = source.payload(packet)
        assert len(data) == packet.size
        assert source.check_payload(packet, data)
        assert source.check_payload(packet, memoryview(bytearray(data)))
        assert not source.check_payload(packet, data[:-1])
        assert not source.check_payload(packet, data + b"\0")
        assert not source.check_payload(other, data)


@given(data=st.data())
def test_check_payload_rejects_any_corruption(data: st.DataObject) -> None:
    source = MediaSource(9, "cam-9")
    packet = source.packet_at(Stream.VIDEO, data.draw(st.integers(0, 100), label="index"))
    payload = bytearray(source.payload(packet))
    position = data.draw(st.integers(0, packet.size - 1), label="position")
    payload[position] ^= data.draw(st.integers(1, 255), label="flip")
    assert not source.check_payload(packet, payload)


def test_write_payload_matches_payload_and_checks_its_buffer() -> None:
    source = MediaSource(9, "cam-9")
    for packet in _take(source, 20):
        out = bytearray(packet.size)
        source.write_payload(packet, memoryview(out))
        assert bytes(out) == source.payload(packet)
    with pytest.raises(ValueError, match="needs"):
        source.write_payload(packet, memoryview(bytearray(packet.size + 1)))


@pytest.mark.parametrize("size", [0, 1, HEADER_BYTES - 1, HEADER_BYTES, 2 * BLOCK_BYTES + 7])
def test_tiny_and_huge_payloads(size: int) -> None:
    source = MediaSource(9, "cam-9")
    packet = Packet(Stream.VIDEO, 3, 0.1, 0.04, keyframe=False, size=size)
    data = source.payload(packet)
    assert len(data) == size
    assert source.check_payload(packet, data)
    out = bytearray(size)
    source.write_payload(packet, memoryview(out))
    assert bytes(out) == data
    if size > HEADER_BYTES:
        assert not source.check_payload(packet, data[:-1] + bytes([data[-1] ^ 1]))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: VideoProfile(fps=0.5), "fps"),
        (lambda: VideoProfile(fps=math.nan), "fps"),
        (lambda: VideoProfile(bitrate_bps=5), "bitrate_bps"),
        (lambda: VideoProfile(gop_frames=0), "gop_frames"),
        (lambda: VideoProfile(gop_frames=True), "gop_frames"),
        (lambda: VideoProfile(i_to_p_ratio=0.5), "i_to_p_ratio"),
        (lambda: VideoProfile(size_cv=0.9), "size_cv"),
        (lambda: VideoProfile(resolution=""), "resolution"),
        (lambda: AudioProfile(frame_duration_s=0.0), "frame_duration_s"),
        (lambda: AudioProfile(bitrate_bps=1.5), "bitrate_bps"),  # type: ignore[arg-type]
        (lambda: AudioProfile(enabled=1), "enabled"),  # type: ignore[arg-type]
        (lambda: MediaSource(-1, "cam"), "seed"),
        (lambda: MediaSource(1, ""), "device_id"),
    ],
)
def test_bad_parameters_name_the_field(make: object, field: str) -> None:
    assert callable(make)
    with pytest.raises(ConfigError, match=field):
        make()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"index": -1},
        {"size": -1},
        {"duration_s": 0.0},
        {"pts_s": math.inf},
        {"stream": Stream.AUDIO, "keyframe": False},
    ],
)
def test_impossible_packets_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "stream": Stream.VIDEO,
        "index": 0,
        "pts_s": 0.0,
        "duration_s": 0.04,
        "keyframe": True,
        "size": 10,
    }
    with pytest.raises(ValueError, match=r"Packet|audio"):
        Packet(**(fields | kwargs))  # type: ignore[arg-type]


def test_microsecond_views_round_for_the_segment_format() -> None:
    packet = Packet(Stream.VIDEO, 1, 1 / 30, 1 / 30, keyframe=False, size=1)
    assert (packet.pts_us, packet.duration_us) == (33_333, 33_333)
    assert packet.end_s == 2 / 30
