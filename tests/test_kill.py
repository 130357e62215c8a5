"""The must-show crash test: a camera recording to disk is SIGKILLed at random instants.

A child process (``tests.killchild``) runs the real camera core on a device data directory,
recording as fast as the disk allows and printing how many records of the open segment are
fsynced. The parent kills it after a random number of those reports, checks the files it left,
and starts the next child on the same directory, whose power-on recovers them. After the last
round a clean power cycle closes the store and ``bwc-sim verify`` must pass. The parent never
sleeps: it blocks on the child's pipe (with a timeout), and after the chosen report reads on for a
random few milliseconds, so the kill lands anywhere in the child's cycle, rollovers included.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from device.packets import Stream
from device.recordfile import (
    RecordType,
    RecordWriter,
    ScanResult,
    SegmentHeader,
    SegmentReader,
    StopReason,
    scan,
)
from device.store import RECORDINGS_DIR, SEGMENT_SUFFIX, manifest_path, read_signed_manifest
from protocol.manifest import SegmentManifest
from sim.media import MediaSource
from tests.killchild import (
    AUDIO,
    AUDIT_FILE,
    DEVICE_ID,
    VIDEO,
    boot_camera,
    finish,
    media_seed,
    start_recording,
)

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 22
MAX_SYNC_REPORTS = 40  # 0.25 s of media each: up to about two segment rollovers per round
MAX_JITTER_S = 0.02  # about one 5 s segment of the child's media on the 2-core dev VM
LINE_TIMEOUT_S = 30.0  # a child that says nothing for this long has hung or died
_KILL_STOPS = {StopReason.CLEAN, StopReason.TORN_RECORD, StopReason.TORN_HEADER}
"""How a kill can end a segment; damage (a bad CRC, length or record) it cannot cause."""


class LineReader:
    """Lines from a child's pipe, each waited for with a timeout (never a sleep)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self.eof = False

    def readline(self, timeout_s: float) -> str | None:
        """The next line without its newline; None at end of file or if none comes in time."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self._fd, 65536)
            self.eof = not chunk
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        """Stop watching the pipe."""
        self._selector.close()


@dataclass(slots=True)
class ChildRun:
    """What one child reported before it was killed (or finished). Paths relative to the store."""

    recovered: dict[str, int] = field(default_factory=dict)
    synced: dict[str, int] = field(default_factory=dict)
    last: str | None = None
    reports: int = 0

    def add(self, line: str) -> None:
        """Take one line of the child's output."""
        kind, segment, count = line.split(" ")
        if kind == "recovered":
            assert segment not in self.recovered, f"recovered twice: {line}"
            self.recovered[segment] = int(count)
        else:
            assert kind == "synced", f"unexpected output: {line!r}"
            assert int(count) > self.synced.get(segment, 0), f"synced count went back: {line}"
            self.synced[segment] = int(count)
            self.last = segment
            self.reports += 1


def _child(data: Path, boot: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and test module
            [sys.executable, "-m", "tests.killchild", str(data), "--boot", str(boot), *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


def _read_until(
    child: subprocess.Popen[bytes], log: Path, reports: int | None, jitter_s: float = 0.0
) -> ChildRun:
    """Read the child's lines until ``reports`` synced lines (or its end, with None), then on
    for ``jitter_s`` more."""
    assert child.stdout is not None
    run, lines = ChildRun(), LineReader(child.stdout)
    try:
        while reports is None or run.reports < reports:
            line = lines.readline(LINE_TIMEOUT_S)
            if line is None:
                assert lines.eof, f"the child printed nothing for {LINE_TIMEOUT_S} s"
                assert reports is None, f"the child died:\n{log.read_text()}"
                return run
            run.add(line)
        # Reports come right after an fsync: without this the kill would always land at the same
        # point of the child's cycle. Read on for a random fraction of a segment, then kill.
        deadline = time.monotonic() + jitter_s
        while (line := lines.readline(deadline - time.monotonic())) is not None:
            run.add(line)
        return run
    finally:
        lines.close()


def _kill_after(data: Path, boot: int, reports: int, jitter_s: float, log: Path) -> ChildRun:
    """Start a recording child, let it report ``reports`` fsyncs, run ``jitter_s`` more, kill it."""
    child = _child(data, boot, log)
    try:
        run = _read_until(child, log, reports, jitter_s)
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, log.read_text()
    return run


def _finish(data: Path, boot: int, log: Path) -> ChildRun:
    """Run the child's clean power cycle to its end."""
    child = _child(data, boot, log, "--finish")
    try:
        run = _read_until(child, log, None)
    finally:
        assert child.wait(timeout=LINE_TIMEOUT_S) == 0, log.read_text()
        assert child.stdout is not None
        child.stdout.close()
    return run


def _segments(data: Path) -> list[Path]:
    return sorted((data / RECORDINGS_DIR).glob(f"*/*{SEGMENT_SUFFIX}"))


def _relative(data: Path, path: Path) -> str:
    return path.relative_to(data).as_posix()


def _manifest(segment: Path) -> SegmentManifest:
    return read_signed_manifest(manifest_path(segment)).decode()


def _open_segments(data: Path) -> dict[str, ScanResult]:
    """Scan every segment that has no manifest: what the kill left open, before any recovery."""
    return {
        _relative(data, path): scan(path)
        for path in _segments(data)
        if not manifest_path(path).exists()
    }


def _check_synced_survived(data: Path, run: ChildRun, left: dict[str, ScanResult]) -> None:
    """Every record the child reported as fsynced is complete in its file after the kill."""
    assert run.last is not None
    assert len(left) <= 1, f"more than one segment open at once: {sorted(left)}"
    for segment, result in left.items():
        assert result.stop in _KILL_STOPS, result.detail
        assert Path(segment).parent == Path(run.last).parent, "open segment of another recording"
    for segment, synced in run.synced.items():
        if segment in left:
            complete = len(left[segment].records)
        else:  # closed by a rollover before the kill
            manifest = _manifest(data / segment)
            assert manifest.status == "complete", segment
            complete = manifest.records
        assert complete >= synced, f"{segment}: {synced} records reported synced, {complete} kept"


def _outcome(left: ScanResult) -> str:
    """Where a kill caught the open segment, for the test's summary line."""
    if not left.records:
        return "creating a segment"
    return "torn record" if left.dropped_bytes else "between records"


def _check_recovered(data: Path, recovered: dict[str, int], left: dict[str, ScanResult]) -> None:
    """Power-on closed exactly the segments the kill left open, keeping every complete record."""
    assert recovered.keys() <= left.keys(), "recovered a segment that was not left open"
    for segment, before in left.items():
        if before.records or segment in recovered:
            _check_recovered_segment(data, segment, recovered.get(segment), before)
        else:
            _check_set_aside(data, segment, before)


def _check_recovered_segment(
    data: Path, segment: str, records: int | None, before: ScanResult
) -> None:
    """A recovered segment holds exactly the complete records the kill left, signed as such."""
    manifest = _manifest(data / segment)
    assert records == len(before.records) == manifest.records, segment
    assert manifest.status == "recovered", segment
    assert (manifest.size, manifest.sha256) == (before.valid_size, before.sha256), segment
    assert (data / segment).stat().st_size == before.valid_size, segment
    torn = data / f"{segment}.torn-{before.valid_size}"
    assert torn.exists() == (before.dropped_bytes > 0), segment
    if before.dropped_bytes:
        assert torn.stat().st_size == before.dropped_bytes, segment


def _check_set_aside(data: Path, segment: str, before: ScanResult) -> None:
    """A segment killed while being created, before its METADATA record was written, holds no
    evidence and cannot be described; power-on may set it aside instead of recovering it, but
    must not leave it open, and must keep its bytes (if any) in a ``.torn-*`` file."""
    path = data / segment
    assert not path.exists(), f"{segment}: still open after power-on"
    kept = [torn.stat().st_size for torn in path.parent.glob(f"{path.name}.torn-*")]
    assert before.file_size in [0, *kept], f"{segment}: {before.file_size} bytes were lost"


def _verify_cli(data: Path) -> tuple[int, dict[str, Any]]:
    """Run ``bwc-sim verify DIR --json`` as a user would; return its exit code and report."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and CLI module
        [sys.executable, "-m", "sim.cli", "verify", str(data), "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.stderr == b"", done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def _check_segment_files(data: Path, recovered: set[str]) -> dict[str, list[Path]]:
    """Each recording's segments are 0..n-1 once each, every one with a manifest that says so."""
    by_recording: dict[str, list[Path]] = {}
    for path in _segments(data):
        by_recording.setdefault(path.parent.name, []).append(path)
    for recording, paths in by_recording.items():
        manifests = [_manifest(path) for path in paths]
        assert [(m.recording, m.index) for m in manifests] == [
            (recording, index) for index in range(len(paths))
        ]
        for path, manifest in zip(paths, manifests, strict=True):
            expected = "recovered" if _relative(data, path) in recovered else "complete"
            assert manifest.status == expected, path
    return by_recording


def _check_media(paths: list[Path], media: MediaSource) -> int:
    """A recording holds its boot's packets, each stream's without a gap; returns the count."""
    following: dict[int, int] = {}
    count = 0
    for path in paths:
        with SegmentReader(path) as reader:
            records = iter(reader)
            assert next(records).info.type is RecordType.METADATA, path
            for record in records:
                info = record.info.media
                if info is None:
                    continue
                expected = following.get(info.stream, info.packet_index)
                assert info.packet_index == expected, f"{path}: gap or repeat in {info}"
                following[info.stream] = expected + 1
                packet = media.packet_at(Stream(info.stream), info.packet_index)
                assert (info.pts_us, info.duration_us) == (packet.pts_us, packet.duration_us)
                assert media.check_payload(packet, record.payload), f"{path}: {info}"
                count += 1
    return count


def _audit_kinds(data: Path) -> Counter[str]:
    lines = (data / AUDIT_FILE).read_bytes().splitlines()
    return Counter(json.loads(line)["kind"] for line in lines)


@pytest.mark.slow
def test_camera_killed_at_random_instants_keeps_every_complete_record(tmp_path: Path) -> None:
    rng = random.Random(1234)
    data, logs = tmp_path / "device", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    left: dict[str, ScanResult] = {}
    recovered: set[str] = set()
    boots: dict[str, int] = {}
    outcomes: Counter[str] = Counter()
    for boot in range(ROUNDS):
        reports, jitter_s = rng.randint(1, MAX_SYNC_REPORTS), rng.uniform(0.0, MAX_JITTER_S)
        run = _kill_after(data, boot, reports, jitter_s, logs / f"{boot}.log")
        _check_recovered(data, run.recovered, left)
        recovered |= run.recovered.keys()
        assert run.last is not None
        assert Path(run.last).parent.name not in boots, "a recording spans two boots"
        boots[Path(run.last).parent.name] = boot
        left = _open_segments(data)
        _check_synced_survived(data, run, left)
        outcomes.update(_outcome(result) for result in left.values())
        if not left:
            outcomes["between segments"] += 1
    run = _finish(data, ROUNDS, logs / "finish.log")
    _check_recovered(data, run.recovered, left)
    recovered |= run.recovered.keys()

    code, report = _verify_cli(data)
    assert (code, report["ok"], report["faults"]) == (0, True, []), report
    by_recording = _check_segment_files(data, recovered)
    directories = {entry.name for entry in (data / RECORDINGS_DIR).iterdir()}
    assert directories == boots.keys(), "one recording per boot, and no other"
    assert by_recording.keys() <= directories
    assert (report["recordings"], report["segments"]) == (len(by_recording), len(_segments(data)))
    packets = 0
    for recording, paths in by_recording.items():
        # A kill right after the first report leaves a recording of its METADATA record only.
        media = MediaSource(media_seed(boots[recording]), DEVICE_ID, VIDEO, AUDIO)
        packets += _check_media(paths, media)
    assert packets > 0
    kinds = _audit_kinds(data)
    assert kinds["power_on"] == ROUNDS + 1
    assert kinds["segment_recovered"] == len(recovered)
    print(f"kills {ROUNDS}: {dict(outcomes)}; recovered {len(recovered)}; packets {packets}")


def _recorded_store(data: Path) -> None:
    """A small closed store made in-process: one recording of three segments."""
    camera, feed, _ = boot_camera(data, 0)
    start_recording(camera, feed)
    feed.advance(15.0)
    finish(camera)


def _flip_middle_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("damaged", ["seg-000001.bwcseg", "seg-000001.manifest.json"])
def test_verify_cli_names_a_file_with_one_changed_byte(tmp_path: Path, damaged: str) -> None:
    data = tmp_path / "device"
    data.mkdir()
    _recorded_store(data)
    (recording,) = (data / RECORDINGS_DIR).iterdir()
    assert (recording / "seg-000002.bwcseg").exists()
    target = recording / damaged
    _flip_middle_byte(target)
    code, report = _verify_cli(data)
    assert (code, report["ok"]) == (1, False)
    assert [fault["path"] for fault in report["faults"]] == [_relative(data, target)]


@pytest.mark.parametrize("content", ["empty", "header only"])
def test_power_on_survives_a_kill_while_a_segment_is_created(tmp_path: Path, content: str) -> None:
    """RecordWriter creates the file (O_EXCL), writes the header, then the store appends and
    writes the METADATA record: a SIGKILL between those steps leaves these files."""
    data = tmp_path / "device"
    data.mkdir()
    _recorded_store(data)
    directory = data / RECORDINGS_DIR / "r000002-20261129T150003Z"
    directory.mkdir()
    path = directory / "seg-000000.bwcseg"
    if content == "empty":
        path.touch()
    else:
        RecordWriter(path, SegmentHeader(DEVICE_ID, directory.name, 0)).close()
    camera, feed, _ = boot_camera(data, 1)
    start_recording(camera, feed)
    feed.advance(8.0)
    finish(camera)
    code, report = _verify_cli(data)
    assert (code, report["faults"]) == (0, []), report
    assert (directory / "seg-000000.bwcseg.torn-0").exists()
    audit = (data / "audit.log").read_text()
    assert '"kind":"segment_set_aside"' in audit
