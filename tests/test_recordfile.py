"""Segment record files: exact layout, round trips, torn tails at every offset, damage, recovery.

The crash test kills a real writer process with SIGKILL at random moments and checks that every
record it reported as fsynced is recovered, and nothing but a prefix of what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import struct
import subprocess
import sys
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.errors import EvidenceError, StorageError
from device.recordfile import RecordWriter, SegmentSummary, recover, scan
from device.recordformat import (
    MAGIC,
    MAX_BODY_BYTES,
    MediaInfo,
    RecordType,
    SegmentHeader,
    SegmentReader,
    StopReason,
)
from tests.crashchild import packet_payload
from tests.fuzz import FUZZ_EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
HEADER = SegmentHeader("cam-1", "rec-000001", 3)
TMP_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Spec:
    """A record to write and what reading it back must give."""

    type: RecordType
    payload: bytes
    media: MediaInfo | None = None


def _media(index: int, size: int) -> Spec:
    info = MediaInfo(index % 2, index, index * 33_333, 33_333, keyframe=False)
    return Spec(RecordType.MEDIA, bytes([index % 256]) * size, info)


media_specs = st.builds(
    lambda stream, packet, pts, duration, key, data: Spec(
        RecordType.MEDIA, data, MediaInfo(stream, packet, pts, duration, key)
    ),
    st.integers(0, 255),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.binary(max_size=600),
)
json_specs = st.builds(
    lambda kind, doc: Spec(kind, json.dumps(doc).encode()),
    st.sampled_from([RecordType.MARKER, RecordType.METADATA]),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20), max_size=4),
)
record_lists = st.lists(media_specs | json_specs, max_size=25)


def _append(writer: RecordWriter, spec: Spec) -> None:
    if spec.media is not None:
        media = spec.media
        writer.append_media(
            stream=media.stream,
            packet_index=media.packet_index,
            pts_us=media.pts_us,
            duration_us=media.duration_us,
            keyframe=media.keyframe,
            data=spec.payload,
        )
    elif spec.type is RecordType.MARKER:
        writer.append_marker(spec.payload)
    else:
        writer.append_metadata(spec.payload)


def _write(path: Path, specs: list[Spec]) -> SegmentSummary:
    with RecordWriter(path, HEADER) as writer:
        for spec in specs:
            _append(writer, spec)
    return writer.close()


def _read(path: Path) -> list[Spec]:
    with SegmentReader(path) as reader:
        return [Spec(r.info.type, r.payload, r.info.media) for r in reader]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fresh(tmp_path: Path, name: str = "seg.bwc") -> Path:
    path = tmp_path / name
    path.unlink(missing_ok=True)
    return path


# A fixed file mixing record kinds and sizes (empty payloads included) for exhaustive tests.
FIXED = [
    Spec(RecordType.METADATA, b'{"trigger":"button"}'),
    *(_media(i, size) for i, size in enumerate([0, 1, 7, 40, 3, 0, 90])),
    Spec(RecordType.MARKER, b'{"bookmark":1}'),
    _media(7, 25),
]


def _fixed_file(tmp_path: Path) -> tuple[Path, bytes, list[int]]:
    """The FIXED file's path, bytes and the end offset of each record."""
    path = _fresh(tmp_path, "fixed.bwc")
    _write(path, FIXED)
    data = path.read_bytes()
    ends = [info.offset + info.size for info in scan(path).records]
    return path, data, ends


def test_layout_is_exactly_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    with RecordWriter(path, SegmentHeader("cam-1", "rec-9", 2)) as writer:
        writer.append_media(
            stream=1, packet_index=5, pts_us=-7, duration_us=20, keyframe=True, data=b"\xaa\xbb"
        )
        writer.append_marker(b"{}")
    header = MAGIC + b"\x00\x01" + b"\x00\x05cam-1" + b"\x00\x05rec-9" + b"\x00\x00\x00\x02"
    header += struct.pack(">I", zlib.crc32(header))
    media = struct.pack(">IB", 24, 1) + struct.pack(">BQqIB", 1, 5, -7, 20, 1) + b"\xaa\xbb"
    marker = struct.pack(">IB", 2, 2) + b"{}"
    expected = b"".join(
        part + struct.pack(">I", zlib.crc32(part)) if part is not header else part
        for part in (header, media, marker)
    )
    assert path.read_bytes() == expected


@TMP_SETTINGS
@given(record_lists)
def test_records_round_trip(tmp_path: Path, specs: list[Spec]) -> None:
    path = _fresh(tmp_path)
    summary = _write(path, specs)
    assert _read(path) == specs
    assert (summary.size, summary.sha256) == (path.stat().st_size, _sha256(path))
    assert summary.records == len(specs)
    assert summary.status == "complete"
    pts = [s.media.pts_us for s in specs if s.media is not None]
    assert summary.first_pts_us == (min(pts) if pts else None)
    assert summary.last_pts_us == (max(pts) if pts else None)
    result = scan(path)
    assert (result.stop, result.sha256, result.dropped_bytes) == (
        StopReason.CLEAN,
        summary.sha256,
        0,
    )


def test_every_truncation_keeps_exactly_the_complete_records(tmp_path: Path) -> None:
    _, data, ends = _fixed_file(tmp_path)
    header_size = len(HEADER.encode())
    path = tmp_path / "cut.bwc"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        result = scan(path)
        if cut < header_size:
            assert (result.header, result.stop, result.records) == (
                None,
                StopReason.TORN_HEADER,
                (),
            )
            continue
        complete = [end for end in ends if end <= cut]
        assert len(result.records) == len(complete), cut
        assert result.valid_size == (complete[-1] if complete else header_size)
        expected_stop = StopReason.CLEAN if result.valid_size == cut else StopReason.TORN_RECORD
        assert result.stop is expected_stop
        assert result.sha256 == hashlib.sha256(data[: result.valid_size]).hexdigest()


@TMP_SETTINGS
@given(st.lists(media_specs, min_size=1, max_size=40), st.data())
def test_truncation_at_sampled_offsets_of_bigger_files(
    tmp_path: Path, specs: list[Spec], data: st.DataObject
) -> None:
    path = _fresh(tmp_path)
    _write(path, specs)
    whole = path.read_bytes()
    ends = [info.offset + info.size for info in scan(path).records]
    cut = data.draw(st.integers(len(HEADER.encode()), len(whole)))
    path.write_bytes(whole[:cut])
    with SegmentReader(path, strict=False) as reader:
        got = [Spec(r.info.type, r.payload, r.info.media) for r in reader]
    assert got == specs[: len([end for end in ends if end <= cut])]


def _record_index(ends: list[int], position: int) -> int:
    return next(i for i, end in enumerate(ends) if position < end)


def test_any_flipped_byte_in_a_record_stops_the_scan_at_that_record(tmp_path: Path) -> None:
    _, data, ends = _fixed_file(tmp_path)
    starts = [len(HEADER.encode()), *ends[:-1]]
    path = tmp_path / "flipped.bwc"
    for position in range(starts[0], len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path.write_bytes(damaged)
        result = scan(path)
        index = _record_index(ends, position)
        assert len(result.records) == index, position
        assert result.valid_size == starts[index]
        if position - starts[index] < 4:  # the length field: the record's span itself moved
            assert result.stop in {
                StopReason.BAD_CRC,
                StopReason.TORN_RECORD,
                StopReason.BAD_LENGTH,
            }
        else:
            assert result.stop is StopReason.BAD_CRC
            assert f"record {index} at byte {starts[index]}" in result.detail


@TMP_SETTINGS
@given(st.data())
def test_random_damage_never_yields_a_corrupted_record(tmp_path: Path, data: st.DataObject) -> None:
    path, original, ends = _fixed_file(tmp_path)
    position = data.draw(st.integers(len(HEADER.encode()), len(original) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(original)
    damaged[position] ^= mask
    path.write_bytes(damaged)
    with SegmentReader(path, strict=False) as reader:
        got = [Spec(r.info.type, r.payload, r.info.media) for r in reader]
    assert got == FIXED[: _record_index(ends, position)]


def test_any_flipped_header_byte_is_evidence_error(tmp_path: Path) -> None:
    _, data, _ = _fixed_file(tmp_path)
    path = tmp_path / "flipped.bwc"
    for position in range(len(HEADER.encode())):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        path.write_bytes(damaged)
        with pytest.raises(EvidenceError, match=r"flipped\.bwc"):
            scan(path)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise_anything_but_evidence_error(
    tmp_path: Path, garbage: bytes, with_header: bool
) -> None:
    path = _fresh(tmp_path)
    prefix = HEADER.encode() if with_header else b""
    path.write_bytes(prefix + garbage)
    try:
        result = scan(path)
    except EvidenceError:
        assert not with_header
        return
    assert result.valid_size == (len(prefix) if result.header else 0) + sum(
        r.size for r in result.records
    )


def test_a_huge_length_field_is_bad_length_not_an_allocation(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    path.write_bytes(HEADER.encode() + struct.pack(">IB", MAX_BODY_BYTES + 1, 1) + b"\x00" * 100)
    result = scan(path)
    assert result.stop is StopReason.BAD_LENGTH
    assert "record 0 at byte" in result.detail


def test_a_valid_crc_over_invalid_content_is_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    for rtype, body in ((9, b"x"), (1, b"short"), (2, b"[1]"), (1, bytes(21) + b"\x02")):
        head = struct.pack(">IB", len(body), rtype) + body
        path.write_bytes(HEADER.encode() + head + struct.pack(">I", zlib.crc32(head)))
        result = scan(path)
        assert (result.stop, result.records) == (StopReason.BAD_RECORD, ()), rtype


def test_strict_reader_names_file_record_and_offset(tmp_path: Path) -> None:
    path, data, ends = _fixed_file(tmp_path)
    path.write_bytes(data[: ends[2] + 3])
    with SegmentReader(path) as reader, pytest.raises(EvidenceError) as caught:
        list(reader)
    assert str(caught.value) == (
        f"{path}: record 3 at byte {ends[2]}: file ends inside the length field"
    )


def test_not_a_segment_file(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(EvidenceError, match="not a segment file"):
        scan(path)
    path.write_bytes(MAGIC + b"\x00\x02")
    with pytest.raises(EvidenceError, match="version 2"):
        scan(path)


def test_recover_cuts_the_tail_keeps_it_aside_and_matches_the_hash(tmp_path: Path) -> None:
    path, data, ends = _fixed_file(tmp_path)
    path.write_bytes(data[: ends[4] + 10])
    summary = recover(path)
    assert (summary.status, summary.records, summary.stop) == (
        "recovered",
        5,
        StopReason.TORN_RECORD,
    )
    assert (summary.size, summary.sha256) == (ends[4], _sha256(path))
    assert summary.sha256 == hashlib.sha256(data[: ends[4]]).hexdigest()
    assert summary.torn_path == tmp_path / f"fixed.bwc.torn-{ends[4]}"
    assert summary.torn_path.read_bytes() == data[ends[4] : ends[4] + 10]
    assert summary.dropped_bytes == 10
    again = recover(path)
    assert (again.sha256, again.dropped_bytes, again.torn_path) == (summary.sha256, 0, None)


def test_recover_of_a_file_left_open_keeps_everything_written(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    writer = RecordWriter(path, HEADER)
    for spec in FIXED:
        _append(writer, spec)
    writer.flush(sync=False)
    writer.abandon()
    summary = recover(path)
    assert (summary.records, summary.stop, summary.torn_path) == (
        len(FIXED),
        StopReason.CLEAN,
        None,
    )
    assert summary.sha256 == _sha256(path)
    assert summary.first_pts_us == 0
    assert summary.end_us == 7 * 33_333 + 33_333


def test_recover_of_a_torn_header_is_evidence_error(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    path.write_bytes(HEADER.encode()[:10])
    assert scan(path).header is None
    with pytest.raises(EvidenceError, match="nothing to recover"):
        recover(path)


def test_writer_never_overwrites_and_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    _write(path, [])
    with pytest.raises(StorageError, match=r"seg\.bwc already exists"):
        RecordWriter(path, HEADER)
    with pytest.raises(StorageError, match="missing"):
        RecordWriter(tmp_path / "missing" / "seg.bwc", HEADER)


def test_writer_rejects_bad_values_without_writing(tmp_path: Path) -> None:
    with RecordWriter(tmp_path / "seg.bwc", HEADER) as writer:
        size = writer.size
        for bad in ({"stream": 256}, {"duration_us": -1}, {"pts_us": 2**63}):
            fields: dict[str, int] = {"stream": 0, "duration_us": 0, "pts_us": 0} | bad
            with pytest.raises(ValueError, match="out of range"):
                writer.append_media(packet_index=0, keyframe=False, data=b"", **fields)
        with pytest.raises(ValueError, match="not valid JSON"):
            writer.append_marker(b"{")
        with pytest.raises(ValueError, match="JSON object"):
            writer.append_metadata(b"[]")
        with pytest.raises(ValueError, match="exceeds"):
            writer.append_marker(b"{}" + b" " * MAX_BODY_BYTES)
        assert (writer.size, writer.records) == (size, 0)
    with pytest.raises(ValueError, match="closed"):
        writer.append_marker(b"{}")
    with pytest.raises(ValueError, match="not a valid ID"):
        SegmentHeader("cam/1", "rec", 0)


def test_flush_policy_is_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "seg.bwc"
    with RecordWriter(path, HEADER) as writer:
        header_size = writer.size
        assert (writer.synced_records, writer.synced_size) == (0, header_size)
        _append(writer, _media(0, 10))
        writer.flush(sync=False)
        assert writer.synced_records == 0
        assert path.stat().st_size == writer.size  # handed to the OS: survives a SIGKILL
        writer.flush(sync=True)
        assert (writer.synced_records, writer.synced_size) == (1, writer.size)
    assert writer.close() is writer.close()


def test_scan_and_reader_use_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.bwc"
    block = bytes(range(256)) * 4096  # 1 MiB
    with RecordWriter(path, HEADER) as writer:
        for index in range(24):
            writer.append_media(
                stream=0,
                packet_index=index,
                pts_us=index,
                duration_us=1,
                keyframe=False,
                data=block,
            )
    tracemalloc.start()
    try:
        result = scan(path)
        _, scan_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with SegmentReader(path) as reader:
            total = sum(len(record.payload) for record in reader)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(result.records), total) == (24, 24 * len(block))
    assert scan_peak < 6 * len(block)
    assert read_peak < 6 * len(block)


def _kill_after(tmp_path: Path, index: int, rng: random.Random) -> tuple[Path, int]:
    """Start a writer child, wait for a random number of fsync reports, SIGKILL it."""
    path = tmp_path / f"crash-{index}.bwc"
    every = rng.choice([1, 7, 50, 200])
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and test module
        [sys.executable, "-m", "tests.crashchild", "segment", str(path), str(every)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    synced = 0
    try:
        for _ in range(rng.randint(1, 60)):
            line = child.stdout.readline()
            assert line, child.stderr.read().decode()
            synced = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return path, synced


def test_sigkill_at_random_instants_loses_nothing_that_was_synced(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    for index in range(10):
        path, synced = _kill_after(tmp_path, index, rng)
        with SegmentReader(path, strict=False) as reader:
            records = list(reader)
        assert len(records) >= synced
        for number, record in enumerate(records):
            assert record.info.media is not None
            assert record.info.media.packet_index == number
            assert record.payload == packet_payload(number)
        summary = recover(path)
        assert summary.records == len(records)
        assert summary.sha256 == _sha256(path)
        assert scan(path).stop is StopReason.CLEAN
