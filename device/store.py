"""The evidence store on the device: recordings, segment files, signed manifests, the budget.

Layout under the data directory (see docs/storage.md):

    recordings/{recording}/seg-{index:06d}.bwcseg          the segment file
    recordings/{recording}/seg-{index:06d}.manifest.json   its signed manifest (once closed)

A segment without a manifest is open, or was open when the device died; ``recover`` closes every
such segment from its complete records. Nothing here deletes evidence except
``remove_verified``, which the upload manager calls once an upload of it was verified.

The store keeps an index of its closed segments, their bytes and the highest recording sequence,
built by one scan when it opens (``rescan``) and kept up to date by its own operations, so
that segment close, trigger and the upload manager's refresh never list the directory. The
index assumes one ``EvidenceStore`` per data directory, as ``used_bytes`` always did: whatever
else changes the directory (another instance or process, a person) is seen at the next
``rescan``, which ``recover`` and the upload manager (at start and every ``rescan_s``) call.
``generation`` changes whenever the index does: a reader that saw it unchanged need not look.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import msgspec

from device.durable import atomic_write_bytes, fsync_directory, storage_error
from device.errors import EvidenceError, StorageError
from device.identity import DeviceIdentity
from device.packets import Packet
from device.recordfile import RecordWriter, SegmentHeader, SegmentReader, SegmentSummary, recover
from device.recordformat import RecordType
from device.segmentmeta import SegmentClosing, SegmentEnd, SegmentStart, build_manifest
from device.store_scan import (
    MANIFEST_SUFFIX,
    RECORDING_SEQ,
    SEGMENT_SUFFIX,
    SegmentKey,
    scan_store,
)
from protocol.jsoncodec import decode_json
from protocol.manifest import SegmentManifest, SignedManifest

RECORDINGS_DIR = "recordings"
_MANIFEST_NAME = re.compile(r"^seg-(\d{6})\.manifest\.json$")
_GENERATIONS = itertools.count(1)
"""Generations are unique across store instances: a reader can never mistake one for another."""


@dataclass(frozen=True, slots=True)
class ClosedSegment:
    """A segment with its signed manifest, as stored."""

    path: Path
    manifest_path: Path
    signed: SignedManifest
    manifest: SegmentManifest


@dataclass(slots=True)
class Recovery:
    """What ``EvidenceStore.recover`` did: segments closed, and files set aside (with why)."""

    closed: list[ClosedSegment] = field(default_factory=list)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)


class OpenSegment:
    """A segment being written. ``append`` is the hot path: one MEDIA record per packet.

    Every ``sync_interval_s`` of media the segment reaches a sync point: fsynced when the store is
    durable, only marked in virtual-time runs. A power loss keeps what was written up to the last
    sync point.
    """

    def __init__(
        self,
        writer: RecordWriter,
        start: SegmentStart,
        *,
        sync_interval_s: float,
        durable: bool,
    ) -> None:
        self.writer = writer
        self.start = start
        self._sync_interval_s = sync_interval_s
        self._durable = durable
        self._next_sync_pts = start.opened_pts_s + sync_interval_s

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self.writer.size

    def append(self, packet: Packet, payload: bytes | bytearray | memoryview) -> None:
        """Write one packet; fsync at most once per ``sync_interval_s`` of media time."""
        self.writer.append_media(
            packet.stream,
            packet.index,
            packet.pts_us,
            packet.duration_us,
            keyframe=packet.keyframe,
            data=payload,
        )
        if packet.pts_s >= self._next_sync_pts:
            self._next_sync_pts = packet.pts_s + self._sync_interval_s
            if self._durable:
                self.writer.flush(sync=True)
            else:
                self.writer.mark_synced()

    def lose_power(self) -> None:
        """The device dies now: the file keeps what it held at the last sync point."""
        self.writer.abandon()
        try:
            os.truncate(self.writer.path, self.writer.synced_size)
        except OSError as exc:
            raise StorageError(f"cannot truncate {self.writer.path}: {exc.strerror}") from exc

    def append_marker(self, document: bytes) -> None:
        """Write a MARKER record (a bookmark or trigger during the recording)."""
        self.writer.append_marker(document)


class EvidenceStore:
    """Segments of one device under ``root/recordings``.

    ``durable`` false (virtual-time runs) writes everything but never fsyncs; sync points are only
    marked, so a simulated power loss loses what a real one would. The files are the same bytes
    either way.
    """

    def __init__(
        self,
        root: Path,
        identity: DeviceIdentity,
        *,
        durable: bool = True,
        sync_interval_s: float | None = 1.0,
    ) -> None:
        self.root = root
        self.identity = identity
        self._dir = root / RECORDINGS_DIR
        self._durable = durable
        self._sync_interval_s = sync_interval_s or float("inf")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self._dir}: {exc.strerror}") from exc
        self._open: set[OpenSegment] = set()
        self._closed: dict[SegmentKey, Path] = {}
        self._used = 0
        self._last_seq = 0
        self._generation = 0
        self.rescan()

    def rescan(self) -> None:
        """Rebuild the index from the directory: closed segments, bytes used, last sequence.

        One listing of each recording directory; ``generation`` changes. The store's own
        operations keep the index current; this is for start-up and for changes made behind
        the store's back.
        """
        scan = scan_store(self._dir, {segment.writer.path for segment in self._open})
        self._closed, self._used, self._last_seq = scan.closed, scan.used, scan.last_seq
        self._generation = next(_GENERATIONS)

    @property
    def generation(self) -> int:
        """Changes whenever the set of closed segments may have: a close, a removal, a rescan."""
        return self._generation

    def closed_index(self) -> Mapping[SegmentKey, Path]:
        """(recording, index) -> path of every closed segment, from the index (a live view)."""
        return MappingProxyType(self._closed)

    @property
    def used_bytes(self) -> int:
        """Bytes of segment files on the device (open ones as of their last append)."""
        return self._used + sum(segment.size for segment in self._open)

    def new_recording_id(self, utc_label: str) -> str:
        """The next recording ID: ``r{seq:06d}-{utc_label}``, seq one above any on disk."""
        return f"r{self._last_seq + 1:06d}-{utc_label}"

    def open_segment(self, start: SegmentStart) -> OpenSegment:
        """Create the segment file and write its METADATA record (durably, when durable)."""
        directory = self._dir / start.recording
        if start.index == 0:
            directory.mkdir(exist_ok=False)
            if self._durable:
                fsync_directory(self._dir)
            if match := RECORDING_SEQ.match(start.recording):
                self._last_seq = max(self._last_seq, int(match.group(1)))
        path = directory / segment_name(start.index)
        header = SegmentHeader(start.device, start.recording, start.index)
        writer = RecordWriter(path, header, sync=False)
        writer.append_metadata(start.encode())
        if self._durable:
            writer.flush(sync=True)
            fsync_directory(directory)
        else:
            writer.mark_synced()
        segment = OpenSegment(
            writer, start, sync_interval_s=self._sync_interval_s, durable=self._durable
        )
        self._open.add(segment)
        return segment

    def close_segment(self, segment: OpenSegment, closing: SegmentClosing) -> ClosedSegment:
        """Finish the file, then write its signed manifest atomically."""
        summary = segment.writer.close(sync=self._durable)
        self._open.discard(segment)
        self._used += summary.size
        closed = self._write_manifest(summary.path, segment.start, _end(summary, closing))
        self._closed[(segment.start.recording, segment.start.index)] = closed.path
        self._generation = next(_GENERATIONS)
        return closed

    def recover(self) -> Recovery:
        """Close every segment left open by a crash, from its complete records; oldest first.

        A segment file that does not even hold its header and METADATA record (the device died
        while creating it) holds no media: it is renamed ``<name>.torn-0``, keeping its bytes,
        and reported in ``set_aside`` so the camera can audit it. Ends with a ``rescan``.
        """
        recovery = Recovery()
        for path in sorted(self._dir.glob(f"*/*{SEGMENT_SUFFIX}")):
            if manifest_path(path).exists():
                continue
            try:
                start = read_segment_start(path)
            except EvidenceError as exc:
                recovery.set_aside.append((self._set_aside(path), str(exc)))
                continue
            recovery.closed.append(self._recover_one(path, start))
        self.rescan()
        return recovery

    def _set_aside(self, path: Path) -> Path:
        target = path.with_name(f"{path.name}.torn-0")
        try:
            path.replace(target)
        except OSError as exc:
            raise StorageError(f"cannot set aside {path}: {exc.strerror}") from exc
        if self._durable:
            fsync_directory(path.parent)
        return target

    def _recover_one(self, path: Path, start: SegmentStart) -> ClosedSegment:
        summary = recover(path)
        closing = SegmentClosing(
            stop_trigger="power", stop_reason="power lost; segment recovered at the next start"
        )
        return self._write_manifest(path, start, _end(summary, closing))

    def _write_manifest(self, path: Path, start: SegmentStart, end: SegmentEnd) -> ClosedSegment:
        manifest = build_manifest(start, end, self.identity.key.key_id)
        signed = self.identity.key.sign_manifest(manifest)
        target = manifest_path(path)
        atomic_write_bytes(target, msgspec.json.encode(signed))
        return ClosedSegment(path, target, signed, manifest)

    def closed_segment_paths(self) -> list[Path]:
        """Paths of every closed segment (one whose manifest exists), by recording then index.

        From the index: nothing is read. ``load_closed`` reads one manifest.
        """
        return [self._closed[key] for key in sorted(self._closed)]

    def load_closed(self, path: Path) -> ClosedSegment:
        """The closed segment at ``path``, with its signed manifest (``EvidenceError`` if bad)."""
        target = manifest_path(path)
        signed = read_signed_manifest(target)
        return ClosedSegment(path, target, signed, signed.decode())

    def remove_verified(self, recording: str, index: int) -> int:
        """Delete a segment whose upload was verified: the file first, then its manifest.

        Only the upload manager calls this, after it made a durable receipt of the verified ack.
        The order matters: a segment file left without its manifest would look open, and
        ``recover`` would sign it again; a manifest left without its file (a crash in between)
        is listed by ``orphan_manifests`` for the same caller to finish. Idempotent. Returns the
        bytes freed (``used_bytes`` drops by as much); the directory is fsynced when durable.
        The recording directory is kept, so recording sequence numbers never repeat.
        """
        path = self._dir / recording / segment_name(index)
        freed = 0
        try:
            freed = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            freed = 0
        except OSError as exc:
            raise storage_error("deleting", path, exc) from exc
        self._used = max(0, self._used - freed)
        if self._closed.pop((recording, index), None) is not None:
            self._generation = next(_GENERATIONS)  # its file is gone: no longer closed
        try:
            manifest_path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error("deleting", manifest_path(path), exc) from exc
        if self._durable:
            fsync_directory(path.parent)
        return freed

    def orphan_manifests(self) -> list[SegmentKey]:
        """(recording, index) of every manifest whose segment file is gone, sorted (a scan)."""
        orphans = []
        for target in sorted(self._dir.glob(f"*/*{MANIFEST_SUFFIX}")):
            match = _MANIFEST_NAME.match(target.name)
            if match and not (target.parent / segment_name(int(match.group(1)))).exists():
                orphans.append((target.parent.name, int(match.group(1))))
        return orphans

    def closed_segments(self) -> Iterator[ClosedSegment]:
        """Every closed segment on the device, by recording then index (a scan; reads each)."""
        for path in sorted(self._dir.glob(f"*/*{SEGMENT_SUFFIX}")):
            target = manifest_path(path)
            if target.exists():
                signed = read_signed_manifest(target)
                yield ClosedSegment(path, target, signed, signed.decode())


def _end(summary: SegmentSummary, closing: SegmentClosing) -> SegmentEnd:
    return SegmentEnd(
        status=summary.status,
        size=summary.size,
        sha256=summary.sha256,
        records=summary.records,
        first_pts_us=summary.first_pts_us,
        end_us=summary.end_us,
        closing=closing,
    )


def segment_name(index: int) -> str:
    """File name of segment ``index``."""
    return f"seg-{index:06d}{SEGMENT_SUFFIX}"


def manifest_path(segment: Path) -> Path:
    """Where the manifest of ``segment`` lives."""
    return segment.with_name(segment.name.removesuffix(SEGMENT_SUFFIX) + MANIFEST_SUFFIX)


def read_signed_manifest(path: Path) -> SignedManifest:
    """Parse a manifest envelope file; ``EvidenceError`` naming it if malformed."""
    try:
        return decode_json(path.read_bytes(), SignedManifest, max_bytes=64 * 1024)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    except Exception as exc:
        raise EvidenceError(f"{path}: not a valid signed manifest: {exc}") from exc


def read_segment_start(path: Path) -> SegmentStart:
    """The METADATA record a segment begins with; ``EvidenceError`` if it has none."""
    with SegmentReader(path, strict=False, with_payload=True) as reader:
        first = next(iter(reader), None)
    if first is None or first.info.type is not RecordType.METADATA:
        raise EvidenceError(f"{path}: no segment metadata record; the segment cannot be described")
    return SegmentStart.decode(first.payload, str(path))
