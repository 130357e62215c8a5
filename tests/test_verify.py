"""``bwc-sim verify``: a real device store checked end to end, and each way it can be wrong.

The stores are made by the device's own classes (identity, audit log, evidence store, a crash and
its recovery); the tests then damage one thing and check that verify names exactly that file.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.audit import AuditLog, AuditSync
from device.auditformat import encode_line, parse_line
from device.identity import DeviceIdentity
from device.recordfile import scan
from device.segmentmeta import SegmentClosing, SegmentStart
from device.segmentverify import SegmentId, verify_segment
from device.signing import DeviceKey, TrustStore
from device.store import EvidenceStore, OpenSegment, manifest_path
from device.verify import verify_store
from device.verifyreport import Trust, VerifyReport
from sim.cli import main
from sim.media import AudioProfile, MediaSource, VideoProfile

DEVICE = "cam-1"
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
FIRST = "r000001-20261129T140000Z"
SECOND = "r000002-20261129T140100Z"
# Small packets keep every file a few kilobytes, so hundreds of verifications take a second.
SMALL_VIDEO = VideoProfile(fps=10.0, bitrate_bps=80_000, gop_frames=10)
SMALL_AUDIO = AudioProfile(bitrate_bps=8_000, frame_duration_s=0.1)
TORN_TAIL = b"\x00\x00\x00\x30\x01partial"  # a record cut short by the crash
UNRECOVERED = "has no manifest: it was open when the device stopped; start the device to recover it"


def _start(recording: str, index: int, opened_pts_s: float) -> SegmentStart:
    return SegmentStart(
        device=DEVICE,
        recording=recording,
        index=index,
        start_trigger="button",
        trigger_source="front",
        requested_pre_roll_s=30.0,
        delivered_pre_roll_s=12.5,
        pts0_mono_s=100.0,
        pts0_utc=T0,
        clock_set=True,
        opened_pts_s=opened_pts_s,
    )


def _fill(segment: OpenSegment, media: MediaSource, until_s: float) -> None:
    for packet in media.packets_until(until_s):
        segment.append(packet, media.payload(packet))


def _open(root: Path) -> tuple[DeviceIdentity, EvidenceStore]:
    identity = DeviceIdentity.load_or_create(root, DEVICE, seed=1)
    return identity, EvidenceStore(root, identity, durable=False)


def build_store(root: Path, media: MediaSource | None = None, *, seconds: float = 1.0) -> None:
    """Two recordings: two closed segments, then one closed and one recovered after a crash."""
    identity, store = _open(root)
    media = media or MediaSource(1, DEVICE, SMALL_VIDEO, SMALL_AUDIO)
    with AuditLog.open(
        root / "audit.log",
        DEVICE,
        utc=T0,
        mono_s=0.0,
        signer=identity.key,
        sync=AuditSync.EXPLICIT,
        checkpoint_every=3,
    ) as audit:
        plan = [(FIRST, 0, None), (FIRST, 1, "button"), (SECOND, 0, None)]
        for number, (recording, index, stop) in enumerate(plan):
            segment = store.open_segment(_start(recording, index, number * seconds))
            _fill(segment, media, (number + 1) * seconds)
            store.close_segment(segment, SegmentClosing(stop_trigger=stop))
            audit.append("segment_closed", T0, number + 1.0, recording=recording, index=index)
        crashed = store.open_segment(_start(SECOND, 1, 3 * seconds))
        _fill(crashed, media, 4 * seconds)
        crashed.writer.abandon()
        with crashed.writer.path.open("ab") as file:
            file.write(TORN_TAIL)
        for closed in store.recover().closed:
            audit.append("segment_recovered", T0, 5.0, recording=closed.manifest.recording)


def segments(root: Path) -> list[Path]:
    return sorted((root / "recordings").glob("*/*.bwcseg"))


def relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def flip(path: Path, position: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


def public_key_hex(root: Path) -> str:
    value = json.loads((root / "device.json").read_text())["public_key"]
    assert isinstance(value, str)
    return value


def only_fault(report: VerifyReport) -> tuple[str, str]:
    assert not report.ok
    assert len(report.faults) == 1, report.faults
    return report.faults[0].path, report.faults[0].problem


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "device"
    root.mkdir()
    build_store(root)
    return root


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine store, free to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "device"))


@pytest.fixture(scope="module")
def shared(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy for property tests, which damage a byte and restore it before the next example."""
    return Path(shutil.copytree(pristine, tmp_path_factory.mktemp("shared") / "device"))


# A clean store -----------------------------------------------------------------------------


def test_a_clean_store_verifies(pristine: Path) -> None:
    report = verify_store(pristine)
    assert report.ok, report.faults
    files = segments(pristine)
    assert (report.recordings, report.segments) == (2, 4)
    assert report.bytes == sum(path.stat().st_size for path in files)
    assert report.audit_records == 6  # genesis, 4 events and a checkpoint after the first 3
    assert report.trust is Trust.SELF
    assert report.device == DEVICE
    torn = [note.path for note in report.notes if ".torn-" in note.path]
    assert torn == [relative(pristine, next(pristine.glob("recordings/*/*.torn-*")))]


def test_the_cli_exits_0_and_says_the_trust_is_only_integrity(
    pristine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(pristine)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "OK: every check holds" in captured.err
    assert "integrity, not authenticity" in captured.err


def test_json_is_exactly_one_object(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--json", str(pristine)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    report = json.loads(out)
    assert set(report) == {
        "ok",
        "store",
        "device",
        "trust",
        "recordings",
        "segments",
        "bytes",
        "audit_records",
        "faults",
        "notes",
    }
    assert report["ok"] is True
    assert (report["store"], report["device"], report["trust"]) == ("device", DEVICE, "self")
    assert report["faults"] == []
    assert all(set(note) == {"path", "note"} for note in report["notes"])


def test_progress_reaches_every_byte(pristine: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = verify_store(pristine, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (report.bytes, report.bytes)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


# Trust -------------------------------------------------------------------------------------


def test_the_right_public_key_makes_it_authentic(pristine: Path) -> None:
    report = verify_store(pristine, public_key=bytes.fromhex(public_key_hex(pristine)))
    assert report.ok
    assert report.trust is Trust.PUBLIC_KEY


def test_a_wrong_public_key_is_a_fault(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = DeviceKey.from_seed(bytes(32))
    argv = ["verify", "--json", "--public-key", wrong.public_bytes().hex(), str(pristine)]
    assert main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["trust"] == "public_key"
    assert [fault["path"] for fault in report["faults"]] == ["device.json"]
    assert wrong.key_id in report["faults"][0]["problem"]


def test_with_all_a_wrong_key_also_fails_every_signature(pristine: Path) -> None:
    wrong = DeviceKey.from_seed(bytes(32))
    report = verify_store(pristine, public_key=wrong.public_bytes(), all_faults=True)
    paths = [fault.path for fault in report.faults]
    assert paths[:2] == ["device.json", "audit.log"]  # its checkpoint is not signed by that key
    assert len(paths) == 2 + 4  # and every manifest


def test_a_trust_store_with_the_enrolled_key(pristine: Path, tmp_path: Path) -> None:
    trust = TrustStore(tmp_path / "trust")
    trust.enroll(DEVICE, bytes.fromhex(public_key_hex(pristine)))
    assert main(["verify", "--trust", str(tmp_path / "trust"), str(pristine)]) == 0
    assert verify_store(pristine, trust_store=trust).trust is Trust.TRUST_STORE


def test_a_device_missing_from_the_trust_store_is_a_fault(pristine: Path, tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    report = verify_store(pristine, trust_store=TrustStore(tmp_path / "trust"))
    path, problem = only_fault(report)
    assert path == "device.json"
    assert "no key in the trust store" in problem


def test_a_device_json_whose_key_id_was_altered(store: Path) -> None:
    document = json.loads((store / "device.json").read_text())
    document["key_id"] = "0" * 16
    (store / "device.json").write_text(json.dumps(document))
    path, problem = only_fault(verify_store(store))
    assert path == "device.json"
    assert "names key_id 0000000000000000" in problem


# The audit log -----------------------------------------------------------------------------


def test_a_tampered_audit_line_is_named(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = store / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"mono_s":2.0', b'"mono_s":9.0')
    log.write_bytes(b"".join(lines))
    assert main(["verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert "FAULT: audit.log: line 3 (seq ?, byte" in err
    assert "hash mismatch" in err


def test_a_rewritten_audit_chain_fails_at_the_next_checkpoint(store: Path) -> None:
    """Recomputing every hash after an edit defeats the chain, not the checkpoint's signature."""
    log = store / "audit.log"
    records = [parse_line(line, 0) for line in log.read_bytes().splitlines(keepends=True)]
    out, prev = [], "0" * 64
    for record in records:
        fields = dict(record.fields)
        if record.seq == 1:
            fields["index"] = 7  # the forger's edit
        line, prev = encode_line(
            record.seq, record.utc, record.mono_s, record.kind, fields, prev=prev
        )
        out.append(line)
    log.write_bytes(b"".join(out))
    path, problem = only_fault(verify_store(store))
    assert path == "audit.log"
    checkpoint = next(r for r in records if r.kind == "checkpoint")
    assert problem.startswith(f"line {checkpoint.seq + 1} (seq {checkpoint.seq}")
    assert "bad signature" in problem


def test_a_missing_audit_log_is_a_fault(store: Path) -> None:
    (store / "audit.log").unlink()
    assert only_fault(verify_store(store))[0] == "audit.log"


# Segments ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), where=st.integers(min_value=0), mask=st.integers(1, 255))
def test_any_changed_byte_of_a_segment_is_named(
    shared: Path, which: int, where: int, mask: int
) -> None:
    target = segments(shared)[which]
    position = where % target.stat().st_size
    flip(target, position, mask)
    try:
        path, _ = only_fault(verify_store(shared))
    finally:
        flip(target, position, mask)
    assert path == relative(shared, target)


def test_every_byte_of_the_head_of_a_segment_matters(shared: Path) -> None:
    """A dense sweep: each byte of the header and METADATA record, then every 7th byte."""
    target = segments(shared)[0]
    key = bytes.fromhex(public_key_hex(shared))
    expect = SegmentId(DEVICE, FIRST, 0)
    head = scan(target).records[1].offset
    size = target.stat().st_size
    for position in [*range(head), *range(head, size, 7)]:
        flip(target, position, 0x80)
        try:
            check = verify_segment(target, manifest_path(target), key, expect=expect)
        finally:
            flip(target, position, 0x80)
        assert check.fault is not None, position
        assert check.fault.path == target
    assert verify_segment(target, manifest_path(target), key, expect=expect).ok


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), where=st.integers(min_value=0), mask=st.integers(1, 255))
def test_any_changed_byte_of_a_manifest_is_named(
    shared: Path, which: int, where: int, mask: int
) -> None:
    target = manifest_path(segments(shared)[which])
    position = where % target.stat().st_size
    flip(target, position, mask)
    try:
        path, _ = only_fault(verify_store(shared))
    finally:
        flip(target, position, mask)
    assert path == relative(shared, target)


def test_a_record_forged_with_a_valid_crc_fails_the_hash(store: Path) -> None:
    target = segments(store)[1]
    record = scan(target).records[3]
    data = bytearray(target.read_bytes())
    end = record.offset + record.size
    data[end - 10] ^= 0xFF  # a payload byte
    data[end - 4 : end] = zlib.crc32(data[record.offset : end - 4]).to_bytes(4, "big")
    target.write_bytes(bytes(data))
    path, problem = only_fault(verify_store(store))
    assert path == relative(store, target)
    assert "has SHA-256" in problem


def test_a_segment_moved_to_another_recording_is_named(store: Path) -> None:
    source, target = segments(store)[0], segments(store)[2]  # FIRST/0 over SECOND/0
    shutil.copyfile(source, target)
    shutil.copyfile(manifest_path(source), manifest_path(target))
    path, problem = only_fault(verify_store(store, all_faults=True))
    assert path == relative(store, manifest_path(target))
    assert f"describes segment {DEVICE}/{FIRST}/0 but is stored as {DEVICE}/{SECOND}/0" in problem


def test_an_unrecovered_segment_is_named_until_the_device_recovers_it(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, evidence = _open(store)
    segment = evidence.open_segment(_start("r000003-20261129T140200Z", 0, 9.0))
    media = MediaSource(1, DEVICE, SMALL_VIDEO, SMALL_AUDIO)
    media.skip_to(9.0)
    _fill(segment, media, 10.0)
    segment.writer.abandon()
    assert main(["verify", str(store)]) == 1
    expected = relative(store, segment.writer.path)
    assert f"FAULT: {expected}: {UNRECOVERED}" in capsys.readouterr().err
    assert len(evidence.recover().closed) == 1
    assert verify_store(store).ok


def test_a_deleted_segment_is_named_by_its_manifest(store: Path) -> None:
    target = segments(store)[1]
    target.unlink()
    path, problem = only_fault(verify_store(store))
    assert path == relative(store, manifest_path(target))
    assert problem.startswith(f"has no segment file ({target.name})")


def test_a_deleted_manifest_is_named_by_its_segment(store: Path) -> None:
    target = segments(store)[2]
    manifest_path(target).unlink()
    assert only_fault(verify_store(store)) == (relative(store, target), UNRECOVERED)


def test_a_recording_with_a_gap_names_the_missing_segment(store: Path) -> None:
    target = segments(store)[0]  # FIRST/0: segment 1 remains, so 0 is a gap
    target.unlink()
    manifest_path(target).unlink()
    path, problem = only_fault(verify_store(store))
    assert path == relative(store, target)
    assert problem.startswith("is missing, and its manifest too")


def test_a_run_of_missing_segments_is_one_fault(store: Path) -> None:
    source = segments(store)[1]  # FIRST/1, renamed to index 5: 1 to 4 are now missing
    target = source.with_name("seg-000005.bwcseg")
    source.rename(target)
    manifest_path(source).rename(manifest_path(target))
    report = verify_store(store, all_faults=True)
    assert [(fault.path, fault.problem.split(":")[0]) for fault in report.faults] == [
        (
            relative(store, source),
            "is missing, and so are segments 2 to 4, with their manifests",
        ),
        (
            relative(store, manifest_path(target)),
            f"describes segment {DEVICE}/{FIRST}/1 but is stored as {DEVICE}/{FIRST}/5",
        ),
    ]


def test_all_lists_every_damaged_file(store: Path) -> None:
    files = segments(store)
    flip(files[0], 100)
    flip(manifest_path(files[3]), 50)
    report = verify_store(store, all_faults=True)
    assert [fault.path for fault in report.faults] == [
        relative(store, files[0]),
        relative(store, manifest_path(files[3])),
    ]
    assert not report.stopped_early
    assert report.segments == 4


def test_leftovers_that_are_not_evidence_are_notes(store: Path) -> None:
    first = store / "recordings" / FIRST
    (first / ".seg-000001.manifest.json.tmp").write_bytes(b"{")
    (store / "recordings" / "README").write_text("hello")
    (store / "recordings" / "r000009-20261129T150000Z").mkdir()
    report = verify_store(store)
    assert report.ok
    notes = {note.path: note.note for note in report.notes}
    assert notes[f"recordings/{FIRST}/.seg-000001.manifest.json.tmp"].startswith("a temporary")
    assert notes["recordings/README"] == "is not a recording directory; ignored"
    assert notes["recordings/r000009-20261129T150000Z"].startswith("holds no segment")
    assert report.recordings == 2


def test_a_device_that_never_recorded_verifies(store: Path) -> None:
    shutil.rmtree(store / "recordings")
    report = verify_store(store)
    assert report.ok
    assert (report.recordings, report.segments, report.bytes) == (0, 0, 0)
    assert "recordings" in {note.path for note in report.notes}


def test_reading_a_large_segment_takes_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "device"
    root.mkdir()
    build_store(root, MediaSource(1, DEVICE), seconds=4.0)  # default profile: about 3 MB/segment
    size = sum(path.stat().st_size for path in segments(root))
    tracemalloc.start()
    try:
        report = verify_store(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok
    assert size > 10 * 1024 * 1024
    assert peak < 3 * 1024 * 1024  # one read buffer and one record, whatever the store's size


# Bad input ---------------------------------------------------------------------------------


def _argv_cases(tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    yield ["verify", str(tmp_path / "missing")], "does not exist"
    yield ["verify", str(tmp_path)], "has none of device.json, audit.log, recordings"
    yield ["verify", "--json", str(tmp_path)], "is not a device's data directory"


def test_a_directory_that_is_not_a_store_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, message in _argv_cases(tmp_path):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert message in captured.err


@pytest.mark.parametrize("key", ["zz", "ab" * 31, "ab" * 33])
def test_a_malformed_public_key_exits_2(
    pristine: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--public-key", key, str(pristine)]) == 2
    assert "64 hex digits" in capsys.readouterr().err


def test_trust_options_are_exclusive(pristine: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verify", "--public-key", "ab" * 32, "--trust", str(tmp_path), str(pristine)])
    assert exited.value.code == 2


def test_a_trust_directory_that_does_not_exist_exits_2(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--trust", str(tmp_path / "nowhere"), str(pristine)]) == 2
    assert "not a directory" in capsys.readouterr().err
