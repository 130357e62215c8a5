"""``UploadManager.refresh`` follows the store's index: it reads nothing while nothing changed,
only new manifests when segments close, and a rescan every ``rescan_s`` (or at start) for what
changed behind the store's back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from device.identity import DeviceIdentity
from device.store import ClosedSegment, EvidenceStore, manifest_path
from device.uploads import UploadManager
from tests.camera_rig import Rig
from tests.test_uploads_manager import record
from tests.upload_loop import FAST, ReceiverShell, UploadLoop, new_manager

RESCAN = replace(FAST, rescan_s=60.0)


class CountingStore(EvidenceStore):
    """An evidence store that counts the manifests read and the rescans made through it."""

    def __init__(self, root: Path, identity: DeviceIdentity) -> None:
        self.loads = 0
        self.rescans = 0
        super().__init__(root, identity, durable=False)

    def load_closed(self, path: Path) -> ClosedSegment:
        self.loads += 1
        return super().load_closed(path)

    def rescan(self) -> None:
        self.rescans += 1
        super().rescan()


def counting_rig(root: Path) -> tuple[Rig, CountingStore]:
    rig = Rig(root)
    store = CountingStore(root, rig.store.identity)
    rig.store = rig.camera.store = store  # one store for the camera and the uploads
    return rig, store


def queued(manager: UploadManager) -> set[tuple[str, int]]:
    return set(manager.queue_order())


def test_an_idle_refresh_reads_nothing_and_a_close_reads_one_manifest(tmp_path: Path) -> None:
    rig, store = counting_rig(tmp_path)
    record(rig, 5.0, 30.0)
    manager = new_manager(store, tmp_path / "uploads", RESCAN)
    manager.refresh(40.0)
    assert (store.loads, store.rescans) == (3, 2)  # the store's own scan at open, the start
    for second in range(41, 99):
        manager.refresh(float(second))
    assert (store.loads, store.rescans) == (3, 2)
    record(rig, 100.0, 104.0)
    manager.refresh(106.0)  # the rescan is due (60 s after the first): nothing new is read
    assert (store.loads, store.rescans) == (4, 3)
    assert queued(manager) == set(store.closed_index())
    record(rig, 110.0, 114.0)
    manager.refresh(116.0)
    assert (store.loads, store.rescans) == (5, 3)
    assert queued(manager) == set(store.closed_index())


def test_a_segment_deleted_by_hand_leaves_the_queue_at_the_next_rescan(tmp_path: Path) -> None:
    rig, store = counting_rig(tmp_path)
    record(rig, 5.0, 30.0)
    manager = new_manager(store, tmp_path / "uploads", RESCAN)
    manager.refresh(40.0)
    victim = sorted(store.closed_index())[1]
    path = store.closed_index()[victim]
    path.unlink()
    manifest_path(path).unlink()
    manager.refresh(41.0)
    assert victim in queued(manager)  # not seen yet: the store was not told
    manager.refresh(100.0)
    assert victim not in queued(manager)
    assert len(queued(manager)) == 2
    assert store.used_bytes == sum(p.stat().st_size for p in store.closed_index().values())


def test_segments_closed_by_another_store_instance_are_found_by_a_rescan(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    other = EvidenceStore(tmp_path, rig.store.identity, durable=False)
    manager = new_manager(other, tmp_path / "uploads", RESCAN)
    manager.refresh(1.0)
    record(rig, 5.0, 30.0)  # through the camera's own store, behind ``other``'s back
    manager.refresh(40.0)
    assert queued(manager) == set()
    manager.refresh(61.0)
    assert queued(manager) == set(rig.store.closed_index())
    assert len(queued(manager)) == 3


def test_uploads_through_the_index_still_deliver_everything(tmp_path: Path) -> None:
    rig, store = counting_rig(tmp_path)
    record(rig, 5.0, 30.0)
    data = {s.signed.upload_id(): s.path.read_bytes() for s in store.closed_segments()}
    manager = new_manager(store, tmp_path / "uploads", RESCAN)
    shell = ReceiverShell(store.identity.key.public_bytes())
    loop = UploadLoop(manager, shell, now=40.0)
    manager.refresh(40.0)
    manager.link_up(None, 40.0)
    loop.run(100.0, lambda: manager.progress().queued_segments == 0)
    assert all(shell.final(uid) == content for uid, content in data.items())
    assert dict(store.closed_index()) == {}
    assert store.used_bytes == 0
    assert store.loads == 3
