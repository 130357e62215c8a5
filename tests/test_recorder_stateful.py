"""The camera core (pre-event buffer + recorder) against a plain reference model.

A Hypothesis rule-based machine runs a real ``Camera`` on a fresh store in virtual time, fed by
the real ``MediaFeed``, and a ``ModelCamera`` (tests/recorder_model.py) fed the very packets the
feed made. After every recording it reads the segment files back and checks: the recording
starts on a video keyframe; its MEDIA records, concatenated over its segments, are exactly the
model's packet stream (the drained pre-roll, then live packets after any keyframe wait, through
the stop or the end of the post-event buffer), with the source's bytes; no packet is lost or
duplicated between buffer and recording; every later segment starts on a keyframe and segments
roll at the first keyframe after ``segment_s``; the delivered pre-roll (manifest and activation
event) is within one GOP of the least of the request, the time spent buffering and what the
byte bound allows. Every step: the camera's state and buffer match the model, the buffer starts
on a keyframe, sleep writes nothing, and the storage total matches the segment files on disk.

The focused tests at the end pin down the stop/restart boundary and the bugs this machine found
(all fixed since): a storage total that left out segment headers and METADATA records, a stop
request lost to a ``max_recording_s`` split during the post-event buffer, and a pre-roll written
into segment 0 whatever ``segment_s``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from device.audit import AuditLog, AuditSync
from device.battery import Battery, BatteryConfig
from device.camera import Camera, CameraState
from device.clock import DeviceClock
from device.identity import DeviceIdentity
from device.packets import Packet, Stream
from device.policy import Durability, RecordingPolicy
from device.recordfile import Record, RecordType, SegmentReader
from device.recording import ActiveRecording
from device.segmentmeta import SegmentStart
from device.store import EvidenceStore
from protocol.common import Trigger
from protocol.events import Activation
from sim.feed import MediaFeed
from sim.media import AudioProfile, MediaSource, VideoProfile
from tests.fuzz import STATEFUL_EXAMPLES
from tests.recorder_model import Expected, ModelCamera, is_keyframe

DEVICE = "cam-rec"
BUTTON = Trigger(kind="button", source="button:event")
EPOCH = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
LONG_RECORDING_S = 4 * 3600.0
SEEDS = 4
"""Encoder seeds are taken from a small pool: each seed costs a 4 MiB filler block (cached)."""
SCRATCH = Path("/dev/shm")
"""Where stores are made when the host has it: fsync (identity, manifests, audit) costs nothing."""


def _milliseconds(low: int, high: int) -> st.SearchStrategy[float]:
    # Whole milliseconds shrink far faster than floats; the clock still sums to awkward floats.
    return st.integers(low, high).map(lambda ms: ms / 1000)


WAITS = st.one_of(st.just(0.0), _milliseconds(10, 1000), _milliseconds(1000, 8000))
"""Virtual seconds of media before a request: at once, within a GOP or so, or a few GOPs on."""


class TappedSource(MediaSource):
    """The encoder, remembering every packet it makes so the model sees what the camera saw."""

    def __init__(self, seed: int, video: VideoProfile, audio: AudioProfile) -> None:
        super().__init__(seed, DEVICE, video, audio)
        self.made: list[Packet] = []

    def next_packet(self) -> Packet:
        packet = super().next_packet()
        self.made.append(packet)
        return packet

    def take(self) -> list[Packet]:
        made, self.made = self.made, []
        return made


@dataclass(frozen=True, slots=True)
class Setup:
    """One example's device: small, so an example runs in milliseconds."""

    seed: int
    video: VideoProfile
    audio: AudioProfile
    policy: RecordingPolicy


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    video = VideoProfile(
        fps=draw(st.sampled_from([10.0, 12.5, 15.0, 24.0, 25.0, 30.0])),
        bitrate_bps=draw(st.integers(200_000, 800_000)),
        gop_frames=draw(st.integers(0, 25).map(lambda n: 30 - n)),
        size_cv=draw(st.sampled_from([0.0, 0.25, 0.5])),
    )
    audio = AudioProfile(
        frame_duration_s=draw(st.sampled_from([0.1, 0.064, 0.04, 0.02])),
        bitrate_bps=draw(st.sampled_from([16_000, 32_000, 64_000])),
        enabled=draw(st.booleans()),
    )
    audio_in_buffer = draw(st.booleans())
    gop_bytes = video.bitrate_bps / 8 * video.gop_duration_s
    if audio_in_buffer and audio.enabled:
        gop_bytes += audio.bitrate_bps / 8 * video.gop_duration_s
    # Roomy, or a few GOPs (binds before the request), or, twice as often, under one GOP
    # (overflows and oversize keyframes: lossy pre-rolls and keyframe waits).
    tight = st.floats(0.3, 0.8)
    factor = draw(st.one_of(st.just(50.0), st.floats(1.0, 6.0), tight, tight))
    post_event_s = draw(st.one_of(st.just(0.0), st.just(0.0), st.floats(1.0, 3.0)))
    # Shrinking goes to the cheapest setups (long GOPs and segments, no audio, no 60 s split).
    short_max = draw(st.booleans())
    policy = RecordingPolicy(
        pre_event_s=draw(st.one_of(st.sampled_from([0.0, 1.0, 2.0, 5.0]), st.floats(0.0, 10.0))),
        pre_event_max_bytes=max(1, int(factor * gop_bytes)),
        audio_in_buffer=audio_in_buffer,
        post_event_s=post_event_s,
        segment_s=draw(st.one_of(st.sampled_from([5.0, 2.0, 1.0]), st.floats(1.0, 5.0))),
        max_recording_s=60.0 if short_max else LONG_RECORDING_S,
        durability=Durability.NONE,
    )
    return Setup(draw(st.integers(0, SEEDS - 1)), video, audio, policy)


def make_camera(root: Path, policy: RecordingPolicy, now: float = 0.0) -> Camera:
    """A camera wired as ``ScenarioRun._new_camera`` wires one, on a non-durable store."""
    identity = DeviceIdentity.load_or_create(root, DEVICE, seed=1)
    clock = DeviceClock(EPOCH, 0.0)
    audit = AuditLog.open(
        root / "audit.log",
        DEVICE,
        utc=clock.utc(now),
        mono_s=now,
        key_id=identity.key.key_id,
        signer=identity.key,
        sync=AuditSync.EXPLICIT,
    )
    return Camera(
        device_id=DEVICE,
        policy=policy,
        battery=Battery(BatteryConfig(capacity_h=1000.0), now),
        store=EvidenceStore(root, identity, durable=False),
        audit=audit,
        clock=clock,
        now=now,
    )


def segment_files(root: Path) -> list[Path]:
    return sorted(root.glob("recordings/*/*.bwcseg"))


def read_records(path: Path) -> list[Record]:
    with SegmentReader(path) as reader:
        return list(reader)


def media_of(records: list[Record]) -> list[Record]:
    return [r for r in records if r.info.type is RecordType.MEDIA]


def media_key(record: Record) -> tuple[Stream, int]:
    media = record.info.media
    assert media is not None
    return Stream(media.stream), media.packet_index


def opens_gop(record: Record) -> bool:
    media = record.info.media
    return media is not None and media.stream == Stream.VIDEO and media.keyframe


class CameraCore(RuleBasedStateMachine):
    """Time, triggers, sleep and power cycles against the reference model."""

    setup: Setup
    camera: Camera
    model: ModelCamera

    def __init__(self) -> None:
        super().__init__()
        scratch = SCRATCH if SCRATCH.is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="bwc-recorder-", dir=scratch))
        self.now = 0.0
        self.boots = 0
        self.source: TappedSource | None = None
        self.feed: MediaFeed | None = None
        self.checked = 0  # recordings verified (camera.finished and model.finished agree)
        self.announced = 0  # activation events matched to model.started
        self.segments_at_sleep = 0

    @initialize(setup=setups())
    def start(self, setup: Setup) -> None:
        self.setup = setup
        self.camera = make_camera(self.root, setup.policy)
        self.model = ModelCamera(setup.policy)
        gop_bytes = setup.video.bitrate_bps / 8 * setup.video.gop_duration_s
        factor = setup.policy.pre_event_max_bytes / gop_bytes
        event(f"buffer bound: {'< 1' if factor < 1 else '< 6' if factor < 6 else '50'} GOPs")
        self._power_on()

    def teardown(self) -> None:
        """Switch off; when the run has not failed, verify the recording it left running too."""
        try:
            if hasattr(self, "camera"):
                try:
                    self.camera.power_off(self.now)
                    if sys.exc_info()[1] is None:  # not while a failure is propagating
                        self.model.power_off()
                        self._settle()
                finally:
                    self.camera.audit.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------------------

    @rule(seconds=WAITS)
    def advance(self, seconds: float) -> None:
        self._advance(seconds)

    @precondition(
        lambda self: (
            self.setup.policy.max_recording_s < LONG_RECORDING_S
            and self.model.state is CameraState.RECORDING
        )
    )
    @rule(past=_milliseconds(0, 3000))
    def record_long(self, past: float) -> None:
        """Record until ``past`` seconds after ``max_recording_s``: it splits at a keyframe."""
        recording = self.model.recording
        assert recording is not None
        split = self.model.pts0 + recording.started_pts_s + self.setup.policy.max_recording_s
        self._advance(max(0.0, split - self.now) + past)

    @rule(after=WAITS)
    def activate(self, after: float) -> None:
        self._advance(after)
        before = self.model.state
        decision = self.camera.activate(BUTTON, self.now)
        assert decision.accepted == self.model.activate(self.now), (before, decision)
        event(f"activate while {before.value}: {decision.accepted}")
        self._settle()

    @rule(after=WAITS)
    def deactivate(self, after: float) -> None:
        self._advance(after)
        before = self.model.state
        decision = self.camera.deactivate(BUTTON, None, self.now)
        assert decision.accepted == self.model.deactivate(self.now), (before, decision)
        self._settle()

    @rule(after=WAITS)
    def sleep(self, after: float) -> None:
        self._advance(after)
        decision = self.camera.sleep(self.now)
        assert decision.accepted == self.model.sleep()
        self.segments_at_sleep = len(segment_files(self.root))
        self._settle()

    @rule(after=WAITS)
    def wake(self, after: float) -> None:
        self._advance(after)
        assert self.camera.wake(self.now).accepted == self.model.wake(self.now)
        self._settle()

    @rule(after=WAITS, off_s=_milliseconds(0, 5000), poke=st.booleans())
    def power_cycle(self, after: float, off_s: float, poke: bool) -> None:
        """Power off (closing any recording), stay off a while, boot with a new encoder."""
        self._advance(after)
        self.camera.power_off(self.now)
        self.model.power_off()
        self.feed = None
        self._settle()
        self.now += off_s
        if poke:
            assert not self.camera.activate(BUTTON, self.now).accepted
            assert not self.camera.wake(self.now).accepted
            assert not self.camera.sleep(self.now).accepted
            self._settle()
        self._power_on()

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def state_and_buffer_match_the_model(self) -> None:
        camera, model = self.camera, self.model
        assert camera.state is model.state
        assert (camera.recording is None) == (model.recording is None)
        held = camera.buffer.packets()
        if camera.state is CameraState.BUFFERING:
            assert held == model.buffer.held
            assert not held or is_keyframe(held[0])
        else:
            assert held == []

    @invariant()
    def sleep_writes_nothing(self) -> None:
        if self.camera.state is CameraState.SLEEPING:
            assert len(segment_files(self.root)) == self.segments_at_sleep

    @invariant()
    def storage_total_is_the_segment_files(self) -> None:
        on_disk = sum(path.stat().st_size for path in segment_files(self.root))
        if self.camera.recording is None:
            assert self.camera.store.used_bytes == on_disk
        else:  # the open segment counts as of its last append; its tail may still be buffered
            assert self.camera.store.used_bytes >= on_disk

    # -- stepping -------------------------------------------------------------------------------

    def _power_on(self) -> None:
        self.boots += 1
        source = TappedSource(
            (self.setup.seed + self.boots) % SEEDS, self.setup.video, self.setup.audio
        )
        assert self.model.power_on(self.now, source)
        assert self.camera.power_on(self.now, source) == []
        self.source, self.feed = source, MediaFeed(self.camera, source, self.now)
        self._settle()

    def _advance(self, seconds: float) -> None:
        self.now += seconds
        if self.feed is not None and self.source is not None:
            made = self.feed.packets_made
            self.feed.advance(self.now)
            packets = self.source.take()
            assert len(packets) == self.feed.packets_made - made, "the tap missed packets"
            for packet in packets:
                self.model.on_packet(packet)
        self._settle()

    def _settle(self) -> None:
        """Match activation events and verify every recording that ended since the last step."""
        for happened in self.camera.outbox.drain():
            if isinstance(happened, Activation):
                self._announced(happened)
        assert self.announced == len(self.model.started)
        assert len(self.camera.finished) == len(self.model.finished)
        for recording, expected in zip(
            self.camera.finished[self.checked :], self.model.finished[self.checked :], strict=True
        ):
            self._verify(recording, expected)
        self.checked = len(self.camera.finished)

    def _announced(self, activation: Activation) -> None:
        assert self.announced < len(self.model.started), "an activation the model did not make"
        expected = self.model.started[self.announced]
        self.announced += 1
        expected.recording_id = activation.recording
        assert activation.trigger.kind == expected.start_trigger
        assert activation.requested_pre_roll_s == expected.requested_s
        assert activation.delivered_pre_roll_s == expected.delivered_s
        check_pre_roll(self.setup, expected)
        event(f"activation: pre-roll {'lossy' if expected.preroll_refused else 'lossless'}")

    # -- one recording, read back ----------------------------------------------------------------

    def _verify(self, recording: ActiveRecording, expected: Expected) -> None:
        assert recording.recording_id == expected.recording_id
        per_segment = self._read_segments(recording, expected)
        records = [record for segment in per_segment for record in segment]
        assert [media_key(record) for record in records] == [
            (p.stream, p.index) for p in expected.packets
        ]
        for record, packet in zip(records, expected.packets, strict=True):
            media = record.info.media
            assert media is not None
            assert (media.pts_us, media.duration_us, media.keyframe) == (
                packet.pts_us,
                packet.duration_us,
                packet.keyframe,
            )
            assert expected.source.check_payload(packet, record.payload)
        assert recording.totals.packets == len(expected.packets)
        assert recording.totals.skipped_before_keyframe == expected.skipped
        check_stream(self.setup, expected)
        check_rollover(self.setup, expected, [len(segment) for segment in per_segment])
        event(f"recording: {min(len(per_segment), 3)}+ segment(s)")
        event(f"recording: stopped by {expected.stop_trigger}, started by {expected.start_trigger}")
        event(f"recording: pre-roll {'lossy' if expected.preroll_refused else 'lossless'}")
        if expected.skipped:
            event("recording: waited for a keyframe")

    def _read_segments(self, recording: ActiveRecording, expected: Expected) -> list[list[Record]]:
        """Each segment's MEDIA records, after checking its file against its manifest."""
        segments = recording.totals.segments
        per_segment = []
        for number, closed in enumerate(segments):
            manifest = closed.manifest
            last = number == len(segments) - 1
            assert (manifest.recording, manifest.index) == (recording.recording_id, number)
            assert manifest.status == "complete"
            assert manifest.start_trigger == expected.start_trigger
            assert manifest.stop_trigger == (expected.stop_trigger if last else None)
            assert manifest.requested_pre_roll_s == expected.requested_s
            assert manifest.delivered_pre_roll_s == expected.delivered_s
            assert closed.path.stat().st_size == manifest.size
            records = read_records(closed.path)
            assert records[0].info.type is RecordType.METADATA
            assert SegmentStart.decode(records[0].payload, str(closed.path)).index == number
            media = media_of(records)
            if number > 0:
                assert media, f"segment {number} holds no media"
                assert opens_gop(media[0]), f"segment {number} starts on a P-frame"
            per_segment.append(media)
        return per_segment


def check_pre_roll(setup: Setup, expected: Expected) -> None:
    """Delivered pre-roll within one GOP of min(requested, time buffering, byte allowance)."""
    if expected.continuation:
        assert expected.delivered_s == 0.0
        return
    gop = setup.video.gop_duration_s
    floor = min(expected.requested_s, expected.history_s, expected.allowance_s)
    delivered = expected.delivered_s
    assert delivered >= floor - gop - 1e-6, (delivered, floor, gop)
    assert delivered <= expected.history_s + 1e-6
    if not expected.preroll_refused:
        audio = setup.audio.frame_duration_s if setup.policy.audio_in_buffer else 0.0
        assert delivered < expected.requested_s + gop + audio + 1e-6
    event(f"pre-roll {'full' if delivered >= expected.requested_s else 'short'}")


def check_stream(setup: Setup, expected: Expected) -> None:
    """Properties of the recorded stream that hold whatever the model says."""
    packets = expected.packets
    assert len({(p.stream, p.index) for p in packets}) == len(packets), "a packet twice"
    if packets:
        assert is_keyframe(packets[0]), "the recording starts on a P-frame or on audio"
    video = [p.index for p in packets if p.stream is Stream.VIDEO]
    audio = [p for p in packets if p.stream is Stream.AUDIO]
    assert video == sorted(video)
    assert [p.index for p in audio] == sorted(p.index for p in audio)
    if video and not expected.preroll_refused:  # no loss in the buffer: no hole in the video
        assert video == list(range(video[0], video[0] + len(video)))
    if not setup.policy.audio_in_buffer:
        assert all(p.pts_s >= expected.activated_pts_s for p in audio)
    live = packets[expected.preroll_len :]
    assert all(p.pts_s >= expected.activated_pts_s for p in live)


def check_rollover(setup: Setup, expected: Expected, counts: list[int]) -> None:
    """Segments are cut at the first keyframe ``segment_s`` after the segment's first, pre-roll
    included."""
    segment_s = setup.policy.segment_s
    start = 0
    groups = []
    for count in counts:
        groups.append(expected.packets[start : start + count])
        start += count
    for number, group in enumerate(groups):
        keys = [p.pts_s for p in group if is_keyframe(p)]
        if not keys:
            assert number == len(groups) - 1, "an empty segment before the last"
            continue
        assert all(pts - keys[0] < segment_s for pts in keys[1:]), "a segment rolled late"
        if number + 1 < len(groups):
            assert is_keyframe(groups[number + 1][0])
            assert groups[number + 1][0].pts_s - keys[0] >= segment_s, "a segment rolled early"


CameraCore.TestCase.settings = settings(
    max_examples=STATEFUL_EXAMPLES, stateful_step_count=30, deadline=None
)
# Passing runs take seconds (about a minute for the CI's 1,000 examples), but shrinking a failure
# replays whole recordings thousands of times and may use Hypothesis's own five-minute cap; the
# default 120 s timeout would kill it and lose the minimal counterexample.
test_camera_core_matches_the_model = pytest.mark.timeout(400)(CameraCore.TestCase)


# -- focused cases: a boundary, and the bugs the machine found ---------------------------------


@dataclass
class Rig:
    """A powered camera on a fresh store with its feed, for the focused tests."""

    root: Path
    camera: Camera
    feed: MediaFeed

    def at(self, now: float) -> Camera:
        self.feed.advance(now)
        return self.camera


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[[RecordingPolicy], Rig]]:
    rigs: list[Rig] = []

    def make(policy: RecordingPolicy) -> Rig:
        root = tmp_path / f"device-{len(rigs)}"
        root.mkdir()
        camera = make_camera(root, policy)
        video = VideoProfile(fps=10.0, bitrate_bps=400_000, gop_frames=10)
        source = MediaSource(3, DEVICE, video, AudioProfile(frame_duration_s=0.04))
        camera.power_on(0.0, source)
        rigs.append(Rig(root, camera, MediaFeed(camera, source, 0.0)))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.camera.power_off(1e6)
        rig.camera.audit.close()


def test_storage_total_counts_whole_segment_files(
    rig_factory: Callable[[RecordingPolicy], Rig],
) -> None:
    rig = rig_factory(RecordingPolicy(pre_event_s=2.0, segment_s=1.0, durability=Durability.NONE))
    assert rig.at(3.0).activate(BUTTON, 3.0).accepted
    assert rig.at(8.0).deactivate(BUTTON, None, 8.0).accepted
    files = segment_files(rig.root)
    assert len(files) > 1
    assert rig.camera.store.used_bytes == sum(path.stat().st_size for path in files)


def test_stop_request_survives_a_max_duration_split(
    rig_factory: Callable[[RecordingPolicy], Rig],
) -> None:
    policy = RecordingPolicy(
        pre_event_s=0.0, post_event_s=3.0, max_recording_s=60.0, durability=Durability.NONE
    )
    rig = rig_factory(policy)
    assert rig.at(0.0).activate(BUTTON, 0.0).accepted
    assert rig.at(59.0).deactivate(BUTTON, None, 59.0).accepted  # post-event ends at 62 s
    camera = rig.at(70.0)  # the split at the keyframe of 60 s falls inside the post-event
    assert camera.state is CameraState.BUFFERING, "the stop request was lost"
    assert [r.start.trigger.kind for r in camera.finished] == ["button", "policy"]
    last = camera.finished[-1].totals.segments[-1].manifest
    assert last.stop_trigger == "button"
    assert last.stop_monotonic_s <= 62.0


def test_a_long_pre_roll_is_cut_into_segments_too(
    rig_factory: Callable[[RecordingPolicy], Rig],
) -> None:
    policy = RecordingPolicy(pre_event_s=8.0, segment_s=2.0, durability=Durability.NONE)
    rig = rig_factory(policy)
    assert rig.at(20.0).activate(BUTTON, 20.0).accepted
    assert rig.at(25.0).deactivate(BUTTON, None, 25.0).accepted
    first = media_of(read_records(segment_files(rig.root)[0]))
    keyframes = [r.info.media.pts_us for r in first if r.info.media and opens_gop(r)]
    # Rolled at the first keyframe at least segment_s after the segment's first: at most one
    # GOP (1 s here) more than segment_s of keyframes.
    assert keyframes[-1] - keyframes[0] < 2_000_000


def _recorded(recording: ActiveRecording, stream: Stream) -> list[int]:
    return [
        index
        for closed in recording.totals.segments
        for kind, index in map(media_key, media_of(read_records(closed.path)))
        if kind is stream
    ]


@pytest.mark.parametrize("post_event_s", [0.0, 1.0])
def test_back_to_back_recordings_neither_lose_nor_repeat_a_packet(
    rig_factory: Callable[[RecordingPolicy], Rig], post_event_s: float
) -> None:
    """The stop falls on a keyframe (5.0 s): it and the audio with it go to the buffer, and from
    there into the next recording, which starts 50 ms later."""
    policy = RecordingPolicy(
        pre_event_s=2.0,
        audio_in_buffer=True,
        post_event_s=post_event_s,
        durability=Durability.NONE,
    )
    rig = rig_factory(policy)  # 10 fps, a keyframe every second, 40 ms audio frames
    assert rig.at(0.0).activate(BUTTON, 0.0).accepted
    stop = 5.0 - post_event_s
    assert rig.at(stop).deactivate(BUTTON, None, stop).accepted
    assert rig.at(5.05).activate(BUTTON, 5.05).accepted
    assert rig.at(7.0).deactivate(BUTTON, None, 7.0).accepted
    rig.at(9.0)  # ends the post-event buffer, if any
    first, second = rig.camera.finished
    assert _recorded(first, Stream.VIDEO) == list(range(50))
    assert _recorded(second, Stream.VIDEO) == list(range(50, 70 + 10 * int(post_event_s)))
    assert _recorded(first, Stream.AUDIO) == list(range(125))
    assert _recorded(second, Stream.AUDIO) == list(range(125, 175 + 25 * int(post_event_s)))
