"""Any interleaving of recordings, link changes, loss, restarts and crashes: every segment ends
verified exactly once, and no segment is deleted before its receipt exists.

The store's index (closed segments, bytes, last recording sequence) is checked against a full
scan of the directory after every step, and the manager's queue against the index after every
refresh; segments an operator deletes by hand leave the queue after a rescan.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from device.store import EvidenceStore, manifest_path
from device.uploads import UploadManager, UploadStateDir
from protocol.upload import UploadReceiver
from sim.linksim import LinkProfile, SimulatedLink
from tests.camera_rig import BUTTON, POLICY, Rig
from tests.store_scan import full_scan
from tests.test_uploads_manager import CrashError, CrashingStore
from tests.upload_loop import ReceiverShell, UploadLoop, camera_audit, new_manager

LIMITS = st.sampled_from([None, 20_000, 70_000])


class UploadWorld(RuleBasedStateMachine):
    """A camera, its upload manager and a receiver, over a lossy, duplicating link."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self.rig = Rig(self.root, replace(POLICY, pre_event_s=1.0, segment_s=4.0))
        self.store = CrashingStore(self.root, self.rig.store.identity, durable=False)
        # One store for the camera and the uploads, as on a device: the index is per instance.
        self.rig.store = self.rig.camera.store = self.store
        self.state_dir = self.root / "uploads"
        self.audit = camera_audit(self.rig.audit)
        self.receiver = ReceiverShell(self.store.identity.key.public_bytes())
        self.loop = UploadLoop(self.fresh_manager(1.0), self.receiver, now=1.0)
        self.known: dict[str, tuple[Path, bytes]] = {}
        self.up = False
        self.limit: int | None = None

    def fresh_manager(self, now: float) -> UploadManager:
        manager = new_manager(self.store, self.state_dir, audit=self.audit)
        manager.refresh(now)
        return manager

    @property
    def manager(self) -> UploadManager:
        return self.loop.manager

    def restart(self) -> None:
        """The device process starts again on the same data directory."""
        self.loop.manager = self.fresh_manager(self.loop.now)
        if self.up:
            self.manager.link_up(self.limit, self.loop.now)

    def run(self, until: float) -> None:
        """Let time pass; a crash restarts the device."""
        self.guard(lambda: self.loop.run(until))

    def guard(self, action: Callable[[], None]) -> None:
        """Do ``action``; if the device crashes in it, restart the device (and stop there)."""
        try:
            action()
        except CrashError:
            self.guard(self.restart)

    # -- rules -----------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2**16), drop=st.sampled_from([0.0, 0.1, 0.25]))
    def link(self, seed: int, drop: float) -> None:
        profile = LinkProfile(drop=drop, duplicate=0.1, jitter_s=0.01)
        self.loop.link = SimulatedLink(profile, seed=seed)
        self.record(3.0)

    @rule(duration=st.floats(0.5, 9.0))
    def record(self, duration: float) -> None:
        start = self.loop.now
        assert self.rig.at(start).activate(BUTTON, start).accepted
        self.run(start + duration)
        assert self.rig.at(self.loop.now).deactivate(BUTTON, "done", self.loop.now).accepted
        self.run(self.loop.now + 0.5)
        self.rig.at(self.loop.now)
        for segment in self.store.closed_segments():
            self.known.setdefault(
                segment.signed.upload_id(), (segment.path, segment.path.read_bytes())
            )
        self.refresh()

    @rule()
    def refresh(self) -> None:
        """The daemon's poll; afterwards the queue is exactly the store's closed segments."""
        try:
            self.manager.refresh(self.loop.now)
        except CrashError:
            self.guard(self.restart)
            return
        index = self.store.closed_index()
        rejected = {(r.recording, r.index) for r in self.manager.rejected()}
        assert set(self.manager.queue_order()) | rejected == index.keys()

    @rule(data=st.data())
    def delete_by_hand(self, data: st.DataObject) -> None:
        """Someone removes a closed segment behind the store's back, then has it rescanned."""
        paths = sorted(self.store.closed_index().values())
        if not paths:
            return
        path = data.draw(st.sampled_from(paths))
        upload_id = self.store.load_closed(path).signed.upload_id()
        path.unlink()
        manifest_path(path).unlink()
        self.known.pop(upload_id, None)
        self.store.rescan()
        self.refresh()

    @rule(dt=st.floats(0.001, 20.0))
    def advance(self, dt: float) -> None:
        self.run(self.loop.now + dt)

    @rule(limit=LIMITS)
    def link_up(self, limit: int | None) -> None:
        self.up, self.limit = True, limit
        self.guard(lambda: self.manager.link_up(limit, self.loop.now))

    @rule()
    def link_down(self) -> None:
        self.up = False
        self.manager.link_down(self.loop.now)

    @rule()
    def restart_device(self) -> None:
        self.guard(self.restart)

    @rule()
    def crash_at_the_next_deletion(self) -> None:
        self.store.crash_next = True

    @rule()
    def restart_receiver(self) -> None:
        """The receiver loses its memory but keeps its disk (committed bytes, finals)."""
        machines = self.receiver.machines
        self.receiver.machines = {}
        for upload_id in machines:
            stored = self.receiver.stored[upload_id]
            hasher = hashlib.sha256(stored.data)
            self.receiver.machines[upload_id] = UploadReceiver(
                self.receiver.offer_of[upload_id],
                self.receiver.config,
                committed=len(stored.data),
                hasher=hasher,
                verified=stored.finals > 0,
            )

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def deleted_only_after_receipt_and_verified_copy(self) -> None:
        state = UploadStateDir(self.state_dir)
        for upload_id, (path, data) in self.known.items():
            if not path.exists():
                stored = self.receiver.final(upload_id)
                assert stored == data
                receipt = state.read_receipt(path.parent.name, int(path.name[4:10]))
                assert receipt is not None
                assert receipt.upload_id == upload_id

    @invariant()
    def index_matches_a_full_scan(self) -> None:
        scan = full_scan(self.root)
        assert dict(self.store.closed_index()) == scan.closed
        assert self.store.used_bytes == scan.used  # no segment is open between steps
        assert self.store.new_recording_id("x") == f"r{scan.last_seq + 1:06d}-x"
        queued = set(self.manager.queue_order())
        assert queued <= scan.closed.keys()  # what disappeared left the queue

    @invariant()
    def never_made_final_twice(self) -> None:
        assert all(stored.finals <= 1 for stored in self.receiver.stored.values())

    def teardown(self) -> None:
        try:
            self.store.crash_next = False
            if not self.up:
                self.link_up(None)
            self.loop.run(
                self.loop.now + 5000.0, lambda: not self.manager.progress().queued_segments
            )
            assert self.manager.progress().queued_segments == 0
            for upload_id, (path, data) in self.known.items():
                assert not path.exists()
                assert self.receiver.final(upload_id) == data
                assert self.receiver.stored[upload_id].finals == 1
            assert EvidenceStore(self.root, self.store.identity).used_bytes == 0
            event(f"segments: {min(len(self.known), 10)}")
            repairs = [r for r in self.rig.records("segment_uploaded") if r.get("repaired")]
            event(f"crashed and repaired: {bool(repairs)}")
        finally:
            self.rig.audit.close()
            self._tmp.cleanup()


UploadWorld.TestCase.settings = settings(
    UploadWorld.TestCase.settings, max_examples=60, stateful_step_count=25
)
test_uploads_converge = UploadWorld.TestCase
