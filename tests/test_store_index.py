"""The evidence store's index against a full scan of its directory, over any sequence of
opens, closes, verified deletions, crashes (an open segment left behind), recoveries, hand edits
followed by a rescan, and reopenings; and the generation: unchanged means unchanged."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from device.errors import StorageError
from device.identity import DeviceIdentity
from device.segmentmeta import SegmentClosing, SegmentStart
from device.store import EvidenceStore, OpenSegment, SegmentKey, manifest_path
from sim.media import AudioProfile, MediaSource, VideoProfile
from tests.store_scan import full_scan

DEVICE = "cam-i"
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
VIDEO = VideoProfile(fps=10.0, bitrate_bps=40_000, gop_frames=10)
AUDIO = AudioProfile(bitrate_bps=8_000, frame_duration_s=0.1)


def start_of(recording: str, index: int) -> SegmentStart:
    return SegmentStart(
        device=DEVICE,
        recording=recording,
        index=index,
        start_trigger="button",
        trigger_source="front",
        requested_pre_roll_s=0.0,
        delivered_pre_roll_s=0.0,
        pts0_mono_s=0.0,
        pts0_utc=T0,
        clock_set=True,
        opened_pts_s=float(index),
    )


class StoreIndex(RuleBasedStateMachine):
    """One store on a scratch directory; ``seen`` is what a reader saw at a generation."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self.identity = DeviceIdentity.load_or_create(self.root, DEVICE, seed=4)
        self.store = EvidenceStore(self.root, self.identity, durable=False)
        self.media = MediaSource(4, DEVICE, VIDEO, AUDIO)
        self.open: OpenSegment | None = None
        self.next_index: dict[str, int] = {}
        self.seen = (self.store.generation, dict(self.store.closed_index()))

    def _open(self, recording: str) -> None:
        index = self.next_index.get(recording, 0)
        self.open = self.store.open_segment(start_of(recording, index))
        self.next_index[recording] = index + 1
        for packet in self.media.packets_until(self.media_time + 0.5):
            self.open.append(packet, self.media.payload(packet))

    @property
    def media_time(self) -> float:
        return sum(self.next_index.values()) * 0.5

    @precondition(lambda self: self.open is None)
    @rule()
    def new_recording(self) -> None:
        self._open(self.store.new_recording_id("20261129T140000Z"))

    @precondition(lambda self: self.open is None and bool(self.next_index))
    @rule(data=st.data())
    def next_segment(self, data: st.DataObject) -> None:
        self._open(data.draw(st.sampled_from(sorted(self.next_index))))

    @precondition(lambda self: self.open is not None)
    @rule()
    def close(self) -> None:
        assert self.open is not None
        self.store.close_segment(self.open, SegmentClosing(stop_trigger=None))
        self.open = None

    @precondition(lambda self: self.open is not None)
    @rule()
    def lose_power_and_recover(self) -> None:
        """The device dies with a segment open; a new store instance recovers it."""
        assert self.open is not None
        self.open.lose_power()
        self.open = None
        self.store = EvidenceStore(self.root, self.identity, durable=False)
        self.store.recover()

    @rule(data=st.data())
    def remove_verified(self, data: st.DataObject) -> None:
        keys = sorted(self.store.closed_index()) or [("r999999-x", 0)]
        recording, index = data.draw(st.sampled_from(keys))
        self.store.remove_verified(recording, index)

    @precondition(lambda self: bool(self.store.closed_index()))
    @rule(data=st.data(), what=st.sampled_from(["segment", "manifest", "both"]))
    def edit_by_hand_then_rescan(self, data: st.DataObject, what: str) -> None:
        path = data.draw(st.sampled_from(sorted(self.store.closed_index().values())))
        if what in {"segment", "both"}:
            path.unlink()
        if what in {"manifest", "both"}:
            manifest_path(path).unlink()
        self.store.rescan()

    @precondition(lambda self: self.open is None)
    @rule()
    def reopen(self) -> None:
        self.store = EvidenceStore(self.root, self.identity, durable=False)

    @invariant()
    def index_is_a_full_scan(self) -> None:
        scan = full_scan(self.root)
        assert dict(self.store.closed_index()) == scan.closed
        assert self.store.closed_segment_paths() == [scan.closed[k] for k in sorted(scan.closed)]
        open_bytes = 0 if self.open is None else self.open.size
        on_disk = 0 if self.open is None else self.open.writer.path.stat().st_size
        assert self.store.used_bytes - open_bytes == scan.used - on_disk
        assert self.store.new_recording_id("t") == f"r{scan.last_seq + 1:06d}-t"

    @invariant()
    def an_unchanged_generation_means_an_unchanged_index(self) -> None:
        generation, index = self.seen
        current: dict[SegmentKey, Path] = dict(self.store.closed_index())
        if self.store.generation == generation:
            assert current == index
        self.seen = (self.store.generation, current)

    def teardown(self) -> None:
        self._tmp.cleanup()


StoreIndex.TestCase.settings = settings(
    StoreIndex.TestCase.settings, max_examples=50, stateful_step_count=30
)
test_store_index = StoreIndex.TestCase


def test_a_recording_number_is_never_reused_after_its_segments_are_deleted(
    tmp_path: Path,
) -> None:
    identity = DeviceIdentity.load_or_create(tmp_path, DEVICE, seed=4)
    store = EvidenceStore(tmp_path, identity, durable=False)
    first = store.new_recording_id("a")
    assert first == "r000001-a"
    store.close_segment(store.open_segment(start_of(first, 0)), SegmentClosing())
    store.remove_verified(first, 0)
    assert store.new_recording_id("b") == "r000002-b"
    assert EvidenceStore(tmp_path, identity).new_recording_id("b") == "r000002-b"


def test_a_rescan_sees_what_another_instance_closed(tmp_path: Path) -> None:
    identity = DeviceIdentity.load_or_create(tmp_path, DEVICE, seed=4)
    reader = EvidenceStore(tmp_path, identity, durable=False)
    writer = EvidenceStore(tmp_path, identity, durable=False)
    recording = writer.new_recording_id("a")
    closed = writer.close_segment(writer.open_segment(start_of(recording, 0)), SegmentClosing())
    before = reader.generation
    assert dict(reader.closed_index()) == {}  # the index follows this instance only
    reader.rescan()
    assert reader.generation != before
    assert dict(reader.closed_index()) == {(recording, 0): closed.path}
    assert reader.used_bytes == closed.path.stat().st_size
    assert reader.new_recording_id("b") == "r000002-b"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_directory_is_a_storage_error(tmp_path: Path) -> None:
    identity = DeviceIdentity.load_or_create(tmp_path, DEVICE, seed=4)
    store = EvidenceStore(tmp_path, identity, durable=False)
    locked = tmp_path / "recordings" / "r000001-a"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(StorageError, match="scanning"):
            store.rescan()
    finally:
        locked.chmod(0o755)
