"""The upload manager against the protocol's receiver, with segments made by a real camera."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from device.errors import ConfigError
from device.store import ClosedSegment, EvidenceStore
from device.uploads import (
    CODE_SEGMENT_UNREADABLE,
    TokenBucket,
    UploadConfig,
    UploadManager,
    UploadStateDir,
)
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    CODE_TOO_LARGE,
    Ack,
    Offer,
    decode_chunk,
    rejected_ack,
)
from sim.linksim import LinkProfile
from tests.camera_rig import BUTTON, Rig
from tests.upload_loop import (
    ACK_TOPIC,
    CHUNK_TOPIC,
    FAST,
    OFFER_TOPIC,
    ReceiverShell,
    Rejecter,
    UploadLoop,
    camera_audit,
    new_manager,
)

CRITICAL = ("officer involved shooting",)


class CrashError(Exception):
    """The device lost power here."""


class CrashingStore(EvidenceStore):
    """An evidence store whose next ``remove_verified`` dies before deleting anything."""

    crash_next = False

    def remove_verified(self, recording: str, index: int) -> int:
        if self.crash_next:
            self.crash_next = False
            raise CrashError
        return super().remove_verified(recording, index)


def record(rig: Rig, start: float, stop: float) -> None:
    """One recording from ``start`` to ``stop`` (segments of 10 s), closed by ``stop + 1``."""
    assert rig.at(start).activate(BUTTON, start).accepted
    assert rig.at(stop).deactivate(BUTTON, "done", stop).accepted
    rig.at(stop + 1.0)


def segments(rig: Rig) -> dict[str, ClosedSegment]:
    """Closed segments by upload ID."""
    return {s.signed.upload_id(): s for s in rig.store.closed_segments()}


def setup(
    tmp_path: Path, config: UploadConfig = FAST, reject: Rejecter | None = None
) -> tuple[Rig, UploadManager, UploadLoop, dict[str, bytes]]:
    """A rig with one 25-second recording, a manager with audit, a receiver, a clean link."""
    rig = Rig(tmp_path)
    record(rig, 5.0, 30.0)
    data = {uid: s.path.read_bytes() for uid, s in segments(rig).items()}
    manager = new_manager(rig.store, tmp_path / "uploads", config, camera_audit(rig.audit))
    shell = ReceiverShell(rig.store.identity.key.public_bytes(), reject=reject)
    loop = UploadLoop(manager, shell, now=40.0)
    manager.refresh(40.0)
    return rig, manager, loop, data


def all_done(manager: UploadManager) -> bool:
    return manager.progress().queued_segments == 0


def test_every_segment_arrives_byte_identical_and_is_deleted_after_its_receipt(
    tmp_path: Path,
) -> None:
    rig, manager, loop, data = setup(tmp_path)
    assert len(data) == 3
    assert manager.progress().queued_bytes == sum(map(len, data.values())) == rig.store.used_bytes
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: all_done(manager))
    for upload_id, content in data.items():
        assert loop.receiver.final(upload_id) == content
        assert loop.receiver.stored[upload_id].finals == 1
    assert list(rig.store.closed_segments()) == []
    assert rig.store.used_bytes == 0
    receipts = sorted((tmp_path / "uploads" / "verified").glob("*.json"))
    assert len(receipts) == 3
    receipt = json.loads(receipts[0].read_text())
    assert receipt["upload_id"] in data
    assert receipt["size"] == len(data[receipt["upload_id"]])
    assert receipt["signed_manifest"]["key_id"] == rig.store.identity.key.key_id
    assert receipt["verified_utc"].startswith("2026-11-29T14:")
    assert list((tmp_path / "uploads" / "segments").glob("*.json")) == []
    uploaded = rig.records("segment_uploaded")
    assert sorted(r["upload_id"] for r in uploaded) == sorted(data)
    assert all("repaired" not in r for r in uploaded)
    progress = manager.progress()
    assert (progress.verified_segments, progress.verified_bytes) == (
        3,
        sum(map(len, data.values())),
    )
    assert progress.bytes_sent >= progress.verified_bytes
    assert progress.to_message().verified_segments == 3


def test_nothing_is_deleted_without_a_verified_ack(tmp_path: Path) -> None:
    rig, manager, loop, _data = setup(tmp_path)
    manager.link_up(None, loop.now)
    loop.drop_acks = True  # every byte is committed, but no ack reaches the device
    loop.run(200.0)
    assert len(list(rig.store.closed_segments())) == 3
    assert list((tmp_path / "uploads" / "verified").glob("*.json")) == []
    assert manager.progress().verified_segments == 0
    assert rig.records("segment_uploaded") == []


def test_critical_recordings_first_then_oldest(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    record(rig, 5.0, 12.0)  # A, oldest
    record(rig, 20.0, 27.0)  # B
    assert rig.at(40.0).activate(BUTTON, 40.0).accepted  # C: critical from its manifests
    rig.camera.categorize(CRITICAL, None, 41.0)
    assert rig.at(47.0).deactivate(BUTTON, "done", 47.0).accepted
    rig.at(60.0)
    a, b, c = sorted({s.manifest.recording for s in rig.store.closed_segments()})
    flagged = [s for s in rig.store.closed_segments() if s.manifest.critical]
    # Every segment closed after categorize, the one open at the time included.
    assert {s.manifest.recording for s in flagged} == {c}
    manager = new_manager(rig.store, tmp_path / "uploads")
    manager.refresh(60.0)
    critical_first = [(c, seg.manifest.index) for seg in flagged]
    assert manager.queue_order()[: len(flagged)] == critical_first
    assert manager.queue_order()[len(flagged) : len(flagged) + 2] == [(a, 0), (a, 1)]
    manager.set_critical({**rig.camera.critical, b: 500.0})
    assert rig.camera.critical[c] > 500.0
    order = manager.queue_order()
    expected = sorted(order, key=lambda k: ({b: 0, c: 1, a: 2}[k[0]], k[1]))
    assert order == expected
    shell = ReceiverShell(rig.store.identity.key.public_bytes())
    loop = UploadLoop(manager, shell, now=60.0)
    ids = {
        (s.manifest.recording, s.manifest.index): s.signed.upload_id()
        for s in rig.store.closed_segments()
    }
    manager.link_up(None, 60.0)
    loop.run(300.0, lambda: all_done(manager))
    assert shell.final_order() == [ids[key] for key in expected]


def test_a_crash_between_receipt_and_delete_is_repaired_at_the_next_refresh(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    store = CrashingStore(tmp_path, rig.store.identity, durable=False)
    record(rig, 5.0, 30.0)
    data = {uid: s.path.read_bytes() for uid, s in segments(rig).items()}
    audit = camera_audit(rig.audit)
    manager = new_manager(store, tmp_path / "uploads", audit=audit)
    manager.refresh(40.0)
    shell = ReceiverShell(store.identity.key.public_bytes())
    loop = UploadLoop(manager, shell, now=40.0)
    manager.link_up(None, 40.0)
    store.crash_next = True
    with pytest.raises(CrashError):
        loop.run(100.0)
    (first,) = [uid for uid in data if shell.final(uid) is not None]
    assert len(list(store.closed_segments())) == 3  # the receipt exists, the file too
    assert len(list((tmp_path / "uploads" / "verified").glob("*.json"))) == 1
    offers = len(shell.offers)

    restarted = new_manager(store, tmp_path / "uploads", audit=audit)
    restarted.refresh(50.0)
    assert len(list(store.closed_segments())) == 2
    assert first not in {s.signed.upload_id() for s in store.closed_segments()}
    assert len(shell.offers) == offers  # repaired from the receipt, not uploaded again
    (repair,) = [r for r in rig.records("segment_uploaded") if r.get("repaired")]
    assert repair["upload_id"] == first
    loop = UploadLoop(restarted, shell, now=50.0)
    restarted.link_up(None, 50.0)
    loop.run(200.0, lambda: all_done(restarted))
    assert all(shell.stored[uid].finals == 1 for uid in data)
    assert list(store.closed_segments()) == []


def test_a_manifest_left_without_its_file_is_removed_given_a_receipt(tmp_path: Path) -> None:
    rig, manager, loop, _ = setup(tmp_path)
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: all_done(manager))
    # Put one segment back as a crash inside remove_verified would have left it: manifest only.
    receipt = json.loads(next((tmp_path / "uploads" / "verified").glob("*.json")).read_text())
    directory = rig.store.root / "recordings" / receipt["recording"]
    manifest = directory / f"seg-{receipt['index']:06d}.manifest.json"
    manifest.write_text(json.dumps(receipt["signed_manifest"]))
    assert rig.store.orphan_manifests() == [(receipt["recording"], receipt["index"])]
    restarted = new_manager(rig.store, tmp_path / "uploads")
    restarted.refresh(200.0)
    assert not manifest.exists()
    assert directory.is_dir()  # kept: recording numbers never repeat


def test_a_restart_mid_upload_resumes_and_delivers_each_segment_once(tmp_path: Path) -> None:
    rig, manager, loop, data = setup(tmp_path)
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: manager.progress().current_committed > 0)
    current = manager.progress().current_upload_id
    assert current is not None
    statuses = {r.upload_id: r.status for r in UploadStateDir(tmp_path / "uploads").records()}
    assert sorted(statuses.values()) == ["queued", "queued", "sending"]
    assert statuses[current] == "sending"
    restarted = new_manager(rig.store, tmp_path / "uploads", audit=camera_audit(rig.audit))
    restarted.refresh(loop.now)
    restarted.link_up(None, loop.now)
    loop.manager = restarted
    loop.run(200.0, lambda: all_done(restarted))
    for upload_id, content in data.items():
        assert loop.receiver.final(upload_id) == content
        assert loop.receiver.stored[upload_id].finals == 1
    total = sum(map(len, data.values()))
    assert restarted.progress().bytes_sent < total  # the resumed upload did not start from 0
    assert list(rig.store.closed_segments()) == []


def test_a_rejected_segment_is_kept_reported_and_not_retried(tmp_path: Path) -> None:
    victim: list[str] = []

    def reject_first(offer: Offer) -> Ack | None:
        if not victim:
            victim.append(offer.upload_id)
        if offer.upload_id == victim[0]:
            return rejected_ack(offer.upload_id, CODE_TOO_LARGE, "too large for this test")
        return None

    rig, manager, loop, data = setup(tmp_path, reject=reject_first)
    manager.link_up(None, loop.now)
    loop.run(600.0)
    (upload_id,) = victim
    assert loop.receiver.offers.count(upload_id) == 1
    assert [s.signed.upload_id() for s in rig.store.closed_segments()] == [upload_id]
    assert loop.receiver.final(upload_id) is None
    progress = manager.progress()
    assert (progress.rejected_segments, progress.verified_segments) == (1, 2)
    assert progress.queued_segments == 0
    (rejection,) = manager.take_rejections()
    assert (rejection.upload_id, rejection.code) == (upload_id, CODE_TOO_LARGE)
    assert manager.take_rejections() == []
    (audited,) = rig.records("upload_rejected")
    assert audited["code"] == CODE_TOO_LARGE
    (status,) = UploadStateDir(tmp_path / "uploads").records()
    assert (status.status, status.code, status.upload_id) == ("rejected", CODE_TOO_LARGE, upload_id)
    # A restart does not retry it either; an operator's release does.
    restarted = new_manager(rig.store, tmp_path / "uploads")
    restarted.refresh(loop.now)
    assert restarted.progress().rejected_segments == 1
    restarted.link_up(None, loop.now)
    loop.manager = restarted
    loop.run(loop.now + 100.0)
    assert loop.receiver.offers.count(upload_id) == 1
    victim[0] = "nobody"
    assert restarted.release(rejection.recording, rejection.index)
    loop.run(loop.now + 100.0, lambda: all_done(restarted))
    assert loop.receiver.final(upload_id) == data[upload_id]


def test_transient_failures_retry_with_jittered_exponential_backoff(tmp_path: Path) -> None:
    _rig, manager, loop, data = setup(tmp_path)
    loop.receiver.busy_until = 70.0
    manager.link_up(None, loop.now)
    loop.run(200.0, lambda: all_done(manager))
    assert all(loop.receiver.final(uid) == content for uid, content in data.items())
    first = loop.receiver.offers[0]
    times = [t for t, p in loop.sent if p.topic == OFFER_TOPIC and first.encode() in p.payload]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Busy answers: each gap is retry_base_s * 2^(n-1) (capped) shortened by up to half.
    for n, gap in enumerate(gaps[:4], start=1):
        nominal = min(FAST.retry_max_s, FAST.retry_base_s * 2 ** (n - 1))
        assert nominal * (1 - FAST.retry_jitter) - 0.1 <= gap <= nominal + 0.1
    assert len({round(g, 3) for g in gaps}) > 1


def test_the_bandwidth_cap_holds_over_virtual_time(tmp_path: Path) -> None:
    cap_bps = 2_000_000.0
    config = replace(FAST, bandwidth_bps=cap_bps, chunk_size=64 * 1024)
    _rig, manager, loop, data = setup(tmp_path, config)
    manager.link_up(None, loop.now)
    loop.run(200.0, lambda: all_done(manager))
    assert all(loop.receiver.final(uid) == content for uid, content in data.items())
    times = [t for t, _ in loop.sent]
    sizes = [len(p.payload) for _, p in loop.sent]
    elapsed = times[-1] - times[0]
    rate = sum(sizes[1:]) * 8 / elapsed
    assert abs(rate - cap_bps) / cap_bps < 0.05
    # Never above the cap by more than one burst over any stretch.
    burst = config.chunk_size + CHUNK_HEADER_SIZE
    for i in range(0, len(times), 7):
        for j in range(i + 1, len(times), 11):
            sent = sum(sizes[i : j + 1])
            assert sent <= burst + (times[j] - times[i]) * cap_bps / 8 + max(sizes) + 1


@pytest.mark.parametrize("limit", [None, 20_000, 65_000])
def test_chunks_never_exceed_the_brokers_limit(tmp_path: Path, limit: int | None) -> None:
    _rig, manager, loop, data = setup(tmp_path, replace(FAST, chunk_size=256 * 1024))
    manager.link_up(limit, loop.now)
    loop.run(200.0, lambda: all_done(manager))
    assert all(loop.receiver.final(uid) == content for uid, content in data.items())
    bound = FAST.max_message_size if limit is None else limit
    chunks = [p.payload for _, p in loop.sent if p.topic == CHUNK_TOPIC]
    assert chunks
    assert max(len(c) for c in chunks) <= bound
    assert max(len(decode_chunk(c).data) for c in chunks) == min(
        256 * 1024, bound - CHUNK_HEADER_SIZE
    )


def test_a_broker_limit_too_small_for_any_chunk_is_a_config_error(tmp_path: Path) -> None:
    _, manager, _, _ = setup(tmp_path)
    with pytest.raises(ConfigError, match="message limit"):
        manager.link_up(1000, 40.0)


def test_link_down_pauses_and_link_up_resumes_with_a_reoffer(tmp_path: Path) -> None:
    _rig, manager, loop, data = setup(tmp_path)
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: manager.progress().current_committed > 100_000)
    current = manager.progress().current_upload_id
    manager.link_down(loop.now)
    assert manager.poll(loop.now) == []
    assert manager.next_deadline() is None
    assert manager.progress().current_upload_id is None
    loop.drain_link()
    loop.now += 30.0
    manager.link_up(None, loop.now)
    publishes = manager.poll(loop.now)
    assert [p.topic for p in publishes] == [OFFER_TOPIC]
    assert current is not None
    assert current.encode() in publishes[0].payload
    loop.link.send(OFFER_TOPIC, publishes[0].payload, loop.now)
    loop.run(200.0, lambda: all_done(manager))
    assert all(loop.receiver.stored[uid].finals == 1 for uid in data)


def test_progress_reports_the_upload_in_flight(tmp_path: Path) -> None:
    _rig, manager, loop, data = setup(tmp_path)
    total = sum(map(len, data.values()))
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: manager.progress().current_committed > 0)
    progress = manager.progress()
    assert progress.link_up
    assert progress.current_upload_id in data
    assert progress.current_size == len(data[progress.current_upload_id])
    assert 0 < progress.current_committed <= progress.current_size
    assert (progress.queued_segments, progress.queued_bytes) == (3, total)
    message = progress.to_message()
    assert message.current == progress.current_upload_id
    assert message.pending_bytes == total


def test_foreign_topics_garbage_and_stale_acks_are_ignored(tmp_path: Path) -> None:
    _rig, manager, loop, data = setup(tmp_path)
    manager.link_up(None, loop.now)
    manager.on_message("bwc/v1/dev/other/upload/ack", b"{}", loop.now)
    manager.on_message(ACK_TOPIC, b"not json", loop.now)
    manager.on_message(ACK_TOPIC, b'{"v":1,"type":"ack"}', loop.now)
    assert manager.ignored_acks == 2
    loop.run(100.0, lambda: all_done(manager))
    assert all(loop.receiver.stored[uid].finals == 1 for uid in data)


def test_a_segment_shorter_than_its_manifest_is_quarantined(tmp_path: Path) -> None:
    rig, manager, loop, _data = setup(tmp_path)
    victim = min(
        rig.store.closed_segments(), key=lambda s: (s.manifest.start_utc, s.manifest.index)
    )
    with victim.path.open("r+b") as file:
        file.truncate(1000)
    manager.link_up(None, loop.now)
    loop.run(100.0)
    (rejection,) = manager.take_rejections()
    assert rejection.code == CODE_SEGMENT_UNREADABLE
    assert victim.path.exists()
    assert manager.progress().verified_segments == 2


def test_a_lossy_duplicating_link_still_delivers_everything_once(tmp_path: Path) -> None:
    _rig, manager, loop, data = setup(tmp_path)
    loop.link = type(loop.link)(LinkProfile(drop=0.2, duplicate=0.2, jitter_s=0.01), seed=5)
    manager.link_up(None, loop.now)
    loop.run(2000.0, lambda: all_done(manager))
    assert all(loop.receiver.final(uid) == content for uid, content in data.items())
    assert all(loop.receiver.stored[uid].finals == 1 for uid in data)


def test_token_bucket_waits_for_tokens_and_repays_debt() -> None:
    bucket = TokenBucket(1000.0, 500)
    assert bucket.ready_at(400, 0.0) == 0.0
    bucket.take(400, 0.0)
    assert bucket.ready_at(400, 0.0) == pytest.approx(0.3)
    assert bucket.ready_at(2000, 0.0) == pytest.approx(0.4)  # at most a full bucket is awaited
    bucket.take(2000, 0.4)
    assert bucket.tokens == pytest.approx(-1500)
    assert bucket.ready_at(1, 0.4) == pytest.approx(1.901)
    with pytest.raises(ConfigError):
        TokenBucket(0.0, 1)


@pytest.mark.parametrize(
    "changes",
    [
        {"chunk_size": 0},
        {"window": 0},
        {"bandwidth_bps": -1.0},
        {"retry_base_s": 10.0, "retry_max_s": 5.0},
        {"retry_jitter": 1.0},
        {"burst_bytes": 0},
        {"rescan_s": 0.0},
        {"rescan_s": float("nan")},
    ],
)
def test_config_is_validated(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        UploadConfig(**changes)  # type: ignore[arg-type]


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    config = UploadConfig(retry_base_s=2.0, retry_max_s=30.0, retry_jitter=0.5)
    assert [config.retry_delay(n, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
    assert config.retry_delay(3, 0.999) == pytest.approx(4.004)
    draws = random.Random(1)
    assert len({config.retry_delay(1, draws.random()) for _ in range(5)}) == 5


def test_a_device_store_with_uploaded_segments_still_verifies(tmp_path: Path) -> None:
    from device.verify import verify_store

    rig, manager, loop, _ = setup(tmp_path)
    manager.link_up(None, loop.now)
    loop.run(100.0, lambda: all_done(manager))
    rig.audit.sync()
    report = verify_store(tmp_path)
    assert report.ok, report.faults
    assert any("3 segment(s) uploaded, verified and deleted" in n.note for n in report.notes)
    # A receipt whose signed manifest was altered is a fault, not a pass.
    receipt = sorted((tmp_path / "uploads" / "verified").glob("*.json"))[0]
    document = json.loads(receipt.read_text())
    document["signed_manifest"]["signature"] = "00" * 64
    receipt.write_text(json.dumps(document))
    assert not verify_store(tmp_path).ok
