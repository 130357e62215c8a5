"""The device's upload manager: a pure core that uploads closed segments, one at a time.

The daemon's asyncio shell drives it. After every input (``refresh``, ``set_critical``,
``link_up``, ``link_down``, ``on_message``, ``handle_timeout``) it calls ``poll(now)`` and
publishes what it returns, in order, with QoS 1; then it arms one timer for
``next_deadline()`` and, when it fires, calls ``handle_timeout(now)`` and ``poll(now)``. The
core reads no clock and no global random generator: time is an argument, jitter comes from an
injected ``random.Random``.

Flow control and delivery are judged from the receiver's acks only (the protocol sender's
window), never from PUBACKs: the shell need not report publish outcomes at all, and a publish
that timed out is "unknown", which the protocol's retransmission covers. A segment is deleted
only after a ``verified`` ack that matches its manifest, and only after a durable receipt of it
(``state.py``); a ``rejected`` one is kept and never retried on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from device.camera_audit import CameraAudit
from device.errors import ConfigError, EvidenceError
from device.store import EvidenceStore
from device.uploads.attempt import Attempt
from device.uploads.bandwidth import TokenBucket
from device.uploads.ledger import UploadLedger
from device.uploads.model import (
    RejectedSegment,
    SegmentStatus,
    UploadConfig,
    UploadProgress,
)
from device.uploads.queue import QueueEntry, SegmentKey, UploadQueue
from device.uploads.state import UploadStateDir
from protocol.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, Topics
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    CODE_NO_ANSWER,
    Finished,
    SenderAction,
    UploadResult,
    UploadSender,
    decode_ack,
    effective_chunk_size,
)

CODE_SEGMENT_UNREADABLE: Final = "segment_unreadable"
"""Local rejection: the segment file cannot be read as its manifest describes (kept, audited)."""
CODE_CANNOT_OFFER: Final = "cannot_offer"
"""Local transient failure: no sender could be built under the current message limit."""


class UploadManager:
    """Uploads every closed segment of ``store``, most urgent first; see the module docstring."""

    def __init__(
        self,
        store: EvidenceStore,
        state_dir: Path,
        *,
        device_id: str,
        topics: Topics,
        config: UploadConfig,
        audit: CameraAudit | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._ledger = UploadLedger(store, UploadStateDir(state_dir, durable=config.durable), audit)
        self._config = config
        self._sender_config = config.sender_config()
        self._rng = rng if rng is not None else random.Random(f"uploads:{device_id}")
        self._offer_topic = topics.device(device_id, DeviceChannel.UPLOAD_OFFER)
        self._chunk_topic = topics.device(device_id, DeviceChannel.UPLOAD_CHUNK)
        self.ack_topic: Final = topics.device(device_id, DeviceChannel.UPLOAD_ACK)
        """The topic to subscribe to before the first ``poll`` after ``link_up``."""
        self._queue = UploadQueue()
        self._rejected: dict[SegmentKey, RejectedSegment] = {}
        self._new_rejections: list[RejectedSegment] = []
        self._attempt: Attempt | None = None
        self._link_up = False
        self._max_message_size = config.max_message_size
        self._bucket = _bucket(config, config.max_message_size)
        self._repaired = False
        self._seen: set[SegmentKey] = set()
        """Keys of the store's index already looked at (queued, rejected, or not offerable)."""
        self._generation: int | None = None
        self._next_rescan = -math.inf
        self._now = 0.0
        self._verified_segments = 0
        self._verified_bytes = 0
        self._bytes_sent = 0
        self.ignored_acks = 0
        """Acks that did not decode or that no correct receiver sends (for diagnostics)."""

    # -- inputs ----------------------------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Queue closed segments not yet known; finish deletions a crash interrupted.

        Follows the store's index (``EvidenceStore.generation``): nothing is read when nothing
        closed or went since the last call, and only the manifests of new segments otherwise,
        so it is cheap to call after every segment close and on every poll. Segments that
        disappeared from the store leave the queue. The first call, and the first one every
        ``config.rescan_s``, rescans the store, which picks up changes made behind its back.
        """
        self._now = now
        if not self._repaired:
            self._ledger.repair_orphans()
            self._repaired = True
        if now >= self._next_rescan:
            self._next_rescan = now + self._config.rescan_s
            self._store.rescan()
            # Look again at what could not be offered (it may have been fixed); keep the rest,
            # so that what the rescan found gone leaves the queue.
            self._seen = {entry.key for entry in self._queue} | self._rejected.keys()
        if self._store.generation != self._generation:
            self._sync(now)

    def set_critical(self, recording_ids: Mapping[str, float]) -> None:
        """Recording ID -> upload deadline (``camera.critical``): these go first, by deadline.

        The upload in flight is not interrupted; the next one is chosen by the new order.
        """
        self._queue.set_critical(recording_ids)

    def link_up(self, max_message_size: int | None, now: float) -> None:
        """The MQTT link is up and subscribed to ``ack_topic``; uploads resume with a re-offer.

        ``max_message_size`` is the largest payload the broker allows (CONNACK maximum packet
        size minus the topic and MQTT overhead), ``None`` for ``config.max_message_size``.
        Raises ``ConfigError`` if it leaves less than ``min_chunk_size`` bytes per chunk.
        """
        self._now = now
        size = self._config.max_message_size if max_message_size is None else max_message_size
        try:
            effective_chunk_size(self._sender_config, size)
        except LocalProtocolError as exc:
            raise ConfigError(f"upload: the broker's message limit is too small: {exc}") from exc
        if size != self._max_message_size:
            self._bucket = _bucket(self._config, size)
        self._max_message_size = size
        self._link_up = True
        self._attempt = None
        for entry in self._queue:
            if entry.last_code == CODE_NO_ANSWER:
                entry.not_before = now  # the silence was probably the link's
        self.refresh(now)

    def link_down(self, now: float) -> None:
        """The link is gone: pause. The attempt in flight is dropped, not counted as failed."""
        self._now = now
        self._link_up = False
        self._attempt = None

    def poll(self, now: float) -> list[Publish]:
        """What to publish now: an offer and chunks, within the window and the bandwidth cap."""
        self._now = now
        if not self._link_up:
            return []
        if self._attempt is None:
            self._start_next(now)
        return self._drain(now)

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        """An incoming message; anything but a decodable ack on ``ack_topic`` is ignored."""
        self._now = now
        if topic != self.ack_topic:
            return
        try:
            ack = decode_ack(payload)
        except DecodeError:
            self.ignored_acks += 1
            return
        attempt = self._attempt
        if attempt is None or ack.upload_id != attempt.upload_id:
            return  # stale: a re-offer will be answered again when its turn comes
        try:
            actions = attempt.sender.receive_ack(ack, now)
        except RemoteProtocolError:
            self.ignored_acks += 1
            return
        self._push(attempt, actions, now)

    def handle_timeout(self, now: float) -> None:
        """Run the sender's timer; back-off and bandwidth waits need only ``poll``."""
        self._now = now
        attempt = self._attempt
        if attempt is None:
            return
        deadline = attempt.sender.next_deadline()
        if deadline is not None and deadline <= now:
            self._push(attempt, attempt.sender.handle_timeout(now), now)

    def release(self, recording: str, index: int) -> bool:
        """Queue a rejected segment again (its cause was fixed); ``False`` if not rejected."""
        if self._rejected.pop((recording, index), None) is None:
            return False
        self._ledger.release(recording, index)
        self._seen.discard((recording, index))
        self._sync(self._now)
        return True

    # -- outputs ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When to call ``handle_timeout`` and ``poll`` next, or ``None`` for no timer."""
        if not self._link_up:
            return None
        attempt = self._attempt
        if attempt is None:
            retry = self._queue.next_retry()
            return None if retry is None else max(retry, self._now)
        moments = [attempt.sender.next_deadline()]
        size = attempt.next_size()
        if size is not None:
            moments.append(
                self._now if self._bucket is None else self._bucket.ready_at(size, self._now)
            )
        return min((moment for moment in moments if moment is not None), default=None)

    def progress(self) -> UploadProgress:
        """Queue, current upload and totals, for telemetry."""
        attempt = self._attempt
        return UploadProgress(
            queued_segments=len(self._queue),
            queued_bytes=self._queue.total_bytes(),
            current_upload_id=None if attempt is None else attempt.upload_id,
            current_committed=0 if attempt is None else attempt.sender.committed,
            current_size=0 if attempt is None else attempt.sender.size,
            verified_segments=self._verified_segments,
            verified_bytes=self._verified_bytes,
            rejected_segments=len(self._rejected),
            bytes_sent=self._bytes_sent,
            link_up=self._link_up,
        )

    def queue_order(self) -> list[SegmentKey]:
        """(recording, index) of every queued segment, most urgent first."""
        return [entry.key for entry in self._queue.ordered()]

    def rejected(self) -> list[RejectedSegment]:
        """Every segment quarantined after a permanent rejection, sorted."""
        return [self._rejected[key] for key in sorted(self._rejected)]

    def take_rejections(self) -> list[RejectedSegment]:
        """Rejections since the last call (for the ``upload_rejected`` fault event)."""
        taken, self._new_rejections = self._new_rejections, []
        return taken

    # -- discovery -------------------------------------------------------------------------------

    def _sync(self, now: float) -> None:
        """Catch up with the store's index: discover new segments, drop the ones gone."""
        index = self._store.closed_index()
        for key in sorted(index.keys() - self._seen):
            self._seen.add(key)
            path = index.get(key)  # gone if an earlier discovery deleted it
            if path is not None and key not in self._queue and key not in self._rejected:
                self._discover(key, path, now)
        for key in self._seen - index.keys():  # deleted here, or found gone by a rescan
            self._seen.discard(key)
            entry = self._queue.remove(key)
            if entry is not None and self._attempt is not None and self._attempt.entry is entry:
                self._attempt = None
            self._rejected.pop(key, None)
        self._generation = self._store.generation

    def _discover(self, key: SegmentKey, path: Path, now: float) -> None:
        try:
            segment = self._store.load_closed(path)
        except EvidenceError:
            return  # a manifest that does not decode cannot be offered; verify reports it
        manifest = segment.manifest
        if (manifest.recording, manifest.index) != key:
            return  # a manifest of another segment cannot describe this file; verify reports it
        receipt = self._ledger.receipt_for(segment)
        if receipt is not None:
            self._ledger.delete(receipt, now, repaired=True)  # a crash came between the two
            return
        entry = QueueEntry(segment, segment.signed.upload_id())
        record = self._ledger.record_for(segment)
        if record is None:
            self._ledger.save(entry, now)
        else:
            entry.status = SegmentStatus(record.status)
            entry.failures = record.attempts
            entry.last_code = record.code
        if entry.status is SegmentStatus.REJECTED:
            message = None if record is None else record.message
            self._rejected[entry.key] = RejectedSegment(
                *entry.key, entry.upload_id, entry.last_code, message
            )
        else:
            self._queue.add(entry)

    # -- attempts --------------------------------------------------------------------------------

    def _start_next(self, now: float) -> None:
        entry = self._queue.next_ready(now)
        if entry is None:
            return
        try:
            sender = UploadSender(
                entry.segment.signed,
                max_message_size=self._max_message_size,
                config=self._sender_config,
            )
        except LocalProtocolError as exc:
            self._failed(entry, Finished(UploadResult.FAILED, CODE_CANNOT_OFFER, str(exc)), now)
            return
        attempt = Attempt(
            entry, sender, offer_topic=self._offer_topic, chunk_topic=self._chunk_topic
        )
        self._attempt = attempt
        if entry.status is not SegmentStatus.SENDING:
            entry.status = SegmentStatus.SENDING
            self._ledger.save(entry, now)
        self._push(attempt, sender.start(now), now)

    def _push(self, attempt: Attempt, actions: list[SenderAction], now: float) -> None:
        outcome = attempt.push(actions)
        if outcome is None:
            return
        self._attempt = None  # first: a storage error below must not leave a dead attempt
        entry = attempt.entry
        if outcome.result is UploadResult.VERIFIED:
            self._ledger.verified(entry, now)
            self._queue.remove(entry.key)
            self._verified_segments += 1
            self._verified_bytes += entry.size
        elif outcome.result is UploadResult.REJECTED:
            self._reject(entry, outcome.code, outcome.message, now)
        else:
            self._failed(entry, outcome, now)

    def _drain(self, now: float) -> list[Publish]:
        attempt = self._attempt
        out: list[Publish] = []
        while attempt is not None and (size := attempt.next_size()) is not None:
            if self._bucket is not None and self._bucket.ready_at(size, now) > now:
                break
            try:
                publish = attempt.pop()
            except EvidenceError as exc:
                self._attempt = None
                self._reject(attempt.entry, CODE_SEGMENT_UNREADABLE, str(exc), now)
                break
            if self._bucket is not None:
                self._bucket.take(size, now)
            self._bytes_sent += size
            out.append(publish)
        return out

    def _reject(self, entry: QueueEntry, code: str | None, message: str | None, now: float) -> None:
        self._queue.remove(entry.key)
        rejected = self._ledger.rejected(entry, code, message, now)
        self._rejected[entry.key] = rejected
        self._new_rejections.append(rejected)

    def _failed(self, entry: QueueEntry, outcome: Finished, now: float) -> None:
        entry.failures += 1
        entry.last_code = outcome.code
        entry.status = SegmentStatus.QUEUED
        entry.not_before = now + self._config.retry_delay(entry.failures, self._rng.random())
        self._ledger.save(entry, now, message=outcome.message)


def _bucket(config: UploadConfig, max_message_size: int) -> TokenBucket | None:
    """The bandwidth cap; its default burst is one chunk of the size the broker's limit allows."""
    if config.bandwidth_bps is None:
        return None
    largest = min(config.chunk_size + CHUNK_HEADER_SIZE, max_message_size)
    return TokenBucket.from_bits(config.bandwidth_bps, config.burst_bytes or largest)
