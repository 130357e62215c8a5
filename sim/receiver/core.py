"""The evidence receiver for any number of devices, with no network I/O: messages in, publishes out.

``EvidenceReceiver.on_message(topic, payload, now)`` takes one MQTT message from a device's
``upload/offer`` or ``upload/chunk`` topic and returns the acks to publish. It runs one
``protocol.upload.UploadReceiver`` per upload in progress, checks trust and the protocol's offer
rules before anything is stored, and carries out the machine's actions on a ``ReceiverStore``:
appended bytes are fsynced before an ack that covers them is returned, so the shell may publish
every returned ack at once. Disk I/O is synchronous; the asyncio shell (``service.py``) runs this
object on one worker thread, one message at a time, in arrival order.

Audit logs: messages on a device's ``audit`` topic go to ``AuditInbox`` (``audit.py``), which
keeps that device's shipped ``audit.log`` and answers on its ``audit/ack`` topic.

Idempotency: an upload, once verified, is answered from its receipt (``verified`` with the same
``sha256``) whatever arrives for it later, and nothing is stored twice. A restarted receiver
resumes an upload in progress from its durable ``.part``, re-hashing those bytes once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from protocol.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, DeviceTopic, Topics
from protocol.upload import (
    CODE_BUSY,
    CODE_STORAGE_ERROR,
    CODE_STORAGE_FULL,
    Ack,
    ChunkCrcError,
    Complete,
    Discard,
    InReplyTo,
    Offer,
    ReceiverAction,
    ReceiverConfig,
    SendAck,
    UploadReceiver,
    WriteData,
    check_offer,
    decode_chunk,
    decode_offer,
    encode_control,
    failed_ack,
    rejected_ack,
    unknown_ack,
)
from sim.receiver.audit import AuditInbox
from sim.receiver.store import (
    IncomingFile,
    Receipt,
    ReceiverStorageError,
    ReceiverStore,
    Resumed,
    UploadState,
)
from sim.receiver.trust import TrustPolicy

log = logging.getLogger(__name__)

CODE_CONFLICT = "conflict"
"""``rejected``: the receiver already holds a different manifest for that segment slot."""


@dataclass(frozen=True, slots=True)
class EvidenceReceiverConfig:
    """Limits of the receiver: the per-upload protocol limits, and concurrent uploads."""

    upload: ReceiverConfig = field(default_factory=ReceiverConfig)
    max_active_uploads: int = 256

    def __post_init__(self) -> None:
        if self.max_active_uploads < 1:
            raise LocalProtocolError("max_active_uploads must be >= 1")


@dataclass(slots=True)
class ReceiverCounters:
    """What the receiver has seen since it started."""

    offers: int = 0
    chunks: int = 0
    corrupt_chunks: int = 0  # CRC mismatch: never committed, never answered
    undecodable: int = 0  # offers or chunks that do not decode: dropped
    ignored: int = 0  # other topics, or a device's message about another device's upload
    protocol_errors: int = 0  # input no correct device sends (chunk past the size...)
    rejected: int = 0
    verified: int = 0
    storage_errors: int = 0


@dataclass(slots=True)
class _Active:
    """An upload in progress: its machine and open ``.part``."""

    device: str
    state: UploadState
    machine: UploadReceiver
    file: IncomingFile


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EvidenceReceiver:
    """Serves every device's uploads from one ``ReceiverStore`` (see the module docstring).

    Building it finishes any completion a crash interrupted (``recovered``). ``on_verified`` is
    called with the receipt of each newly verified segment.
    """

    def __init__(
        self,
        store: ReceiverStore,
        trust: TrustPolicy,
        *,
        config: EvidenceReceiverConfig | None = None,
        topics: Topics | None = None,
        utc_now: Callable[[], datetime] = _utc_now,
        on_verified: Callable[[Receipt], None] | None = None,
    ) -> None:
        self.store = store
        self.trust = trust
        self.config = config or EvidenceReceiverConfig()
        self.topics = topics or Topics()
        self.counters = ReceiverCounters()
        self._utc_now = utc_now
        self._on_verified = on_verified
        self._active: dict[str, _Active] = {}
        self.recovered = store.recover(utc_now())
        self.audit = AuditInbox(store, trust, self.topics)
        """Received audit logs; building it cut any torn tail (``audit_recovered`` lists whose)."""
        self.audit_recovered = self.audit.recover()

    # -- public API --------------------------------------------------------------------------

    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters to subscribe to (QoS 1)."""
        return (
            self.topics.device_filter(DeviceChannel.UPLOAD_OFFER),
            self.topics.device_filter(DeviceChannel.UPLOAD_CHUNK),
            self.topics.device_filter(DeviceChannel.AUDIT),
        )

    @property
    def active_uploads(self) -> tuple[str, ...]:
        """Upload IDs held in memory (in progress and not idle)."""
        return tuple(self._active)

    def on_message(self, topic: str, payload: bytes, now: float) -> list[Publish]:
        """Handle one message; return the acks to publish, in order."""
        try:
            parsed = self.topics.parse(topic)
        except DecodeError:
            parsed = None
        if not isinstance(parsed, DeviceTopic):
            self.counters.ignored += 1
            return []
        if parsed.channel is DeviceChannel.UPLOAD_OFFER:
            return self._offer(parsed.device, payload, now)
        if parsed.channel is DeviceChannel.UPLOAD_CHUNK:
            return self._chunk(parsed.device, payload, now)
        if parsed.channel is DeviceChannel.AUDIT:
            return self.audit.on_range(parsed.device, payload)
        self.counters.ignored += 1
        return []

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run next, or ``None``."""
        deadlines = [d for a in self._active.values() if (d := a.machine.next_deadline())]
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> list[Publish]:
        """Release idle uploads (their ``.part`` stays: the next offer or chunk resumes them)."""
        for upload_id, active in list(self._active.items()):
            deadline = active.machine.next_deadline()
            if deadline is not None and deadline <= now:
                active.machine.handle_timeout(now)
            if active.machine.evictable:
                self._drop(upload_id)
        return []

    def present_key(self, device: str, public_key: bytes) -> None:
        """A host-presented key for ``device`` (see ``TrustPolicy.present``)."""
        self.trust.present(device, public_key)

    def close(self) -> None:
        """Close every open file; durable state is untouched."""
        for upload_id in list(self._active):
            self._drop(upload_id)

    # -- offers ------------------------------------------------------------------------------

    def _offer(self, device: str, payload: bytes, now: float) -> list[Publish]:
        try:
            offer = decode_offer(payload)
        except DecodeError as exc:
            self.counters.undecodable += 1
            log.debug("undecodable offer from %s: %s", device, exc)
            return []
        self.counters.offers += 1
        active = self._active.get(offer.upload_id)
        if active is None or active.device != device:
            found = self._new_offer(device, offer)
            if isinstance(found, Ack):
                return [self._publish(device, found)]
            active = found
        return self._run(active, lambda machine: machine.receive_offer(offer, now))

    def _new_offer(self, device: str, offer: Offer) -> _Active | Ack:
        """The upload an offer not in memory opens or resumes, or the ack that answers it."""
        rejection = self._admit(device, offer)
        if rejection is not None:
            self.counters.rejected += 1
            log.warning("rejected upload %s from %s: %s", offer.upload_id, device, rejection.code)
            return rejection
        receipt = self.store.receipt(offer.upload_id)
        if receipt is not None:
            return self._answer_verified(receipt, "offer")
        if len(self._active) >= self.config.max_active_uploads:
            committed = self.store.durable_length(offer.upload_id)
            text = f"{len(self._active)} uploads in progress; try again later"
            return failed_ack(
                offer.upload_id, committed=committed, code=CODE_BUSY, in_reply_to="offer",
                message=text,
            )  # fmt: skip
        try:
            return self._open(device, offer)
        except ReceiverStorageError as exc:
            return self._storage_failure(offer.upload_id, 0, exc, "offer")

    def _admit(self, device: str, offer: Offer) -> Ack | None:
        """The permanent rejection of an offer, or ``None`` once it passed every check."""
        rejection = check_offer(offer, self.config.upload)
        if rejection is None:
            rejection = self.trust.check(device, offer.signed_manifest)
        if rejection is None:
            rejection = self._conflict(offer)
        return rejection

    def _conflict(self, offer: Offer) -> Ack | None:
        stored = self.store.stored_manifest(offer.signed_manifest.decode())
        if stored is None or stored.upload_id() == offer.upload_id:
            return None
        text = "this receiver holds a different signed manifest for that segment; never replaced"
        return rejected_ack(offer.upload_id, CODE_CONFLICT, text)

    def _open(self, device: str, offer: Offer) -> _Active:
        resumed = self.store.resume(offer.upload_id)
        if resumed is None:
            file = self.store.begin(device, offer)
            state = UploadState(device=device, offer=offer)
            machine = UploadReceiver(offer, self.config.upload)
            return self._keep(_Active(device, state, machine, file))
        return self._rebuild(resumed, offer)

    def _rebuild(self, resumed: Resumed, offer: Offer) -> _Active:
        file = self.store.open_part(offer.upload_id)
        size = offer.signed_manifest.decode().size
        committed, hasher = resumed.committed, resumed.hasher
        if committed > size:  # damaged: never happens through this code; start over
            file.truncate()
            committed, hasher = 0, hashlib.sha256()
        machine = UploadReceiver(offer, self.config.upload, committed=committed, hasher=hasher)
        log.info("resumed upload %s at %d of %d bytes", offer.upload_id, committed, size)
        return self._keep(_Active(resumed.state.device, resumed.state, machine, file))

    def _keep(self, active: _Active) -> _Active:
        self._active[active.machine.upload_id] = active
        return active

    # -- chunks ------------------------------------------------------------------------------

    def _chunk(self, device: str, payload: bytes, now: float) -> list[Publish]:
        try:
            chunk = decode_chunk(payload)
        except ChunkCrcError as error:
            self.counters.corrupt_chunks += 1
            if (active := self._active.get(error.upload_id)) is not None:
                active.machine.receive_corrupt_chunk(error)
            return []
        except DecodeError:
            self.counters.undecodable += 1
            return []
        self.counters.chunks += 1
        found = self._active.get(chunk.upload_id) or self._chunk_owner(device, chunk.upload_id)
        if isinstance(found, Ack):
            return [self._publish(device, found)]
        if found is None or found.device != device:
            return self._ignore()
        return self._run(found, lambda machine: machine.receive_chunk(chunk, now))

    def _chunk_owner(self, device: str, upload_id: str) -> _Active | Ack | None:
        """For a chunk of an upload not in memory: its verified answer, the upload rebuilt from
        disk, ``unknown`` if there is no record of it, or ``None`` if another device owns it."""
        receipt = self.store.receipt(upload_id)
        if receipt is not None:
            return self._answer_verified(receipt, "chunk") if receipt.device == device else None
        try:
            resumed = self.store.resume(upload_id)
            if resumed is None:
                return unknown_ack(upload_id, in_reply_to="chunk")
            if resumed.state.device != device:
                return None
            return self._rebuild(resumed, resumed.state.offer)
        except ReceiverStorageError as exc:
            return self._storage_failure(upload_id, 0, exc, "chunk")

    def _ignore(self) -> list[Publish]:
        self.counters.ignored += 1
        return []

    # -- carrying out the machine's actions --------------------------------------------------

    def _run(
        self, active: _Active, step: Callable[[UploadReceiver], list[ReceiverAction]]
    ) -> list[Publish]:
        try:
            actions = step(active.machine)
        except RemoteProtocolError as exc:
            self.counters.protocol_errors += 1
            log.warning("upload %s from %s: %s", active.machine.upload_id, active.device, exc)
            return []
        out: list[Publish] = []
        for action in actions:
            try:
                self._apply(active, action, out)
            except ReceiverStorageError as exc:
                upload_id = active.machine.upload_id
                durable = active.file.durable_length
                self._drop(upload_id)  # its memory is ahead of the disk: rebuild from the disk
                out.append(
                    self._publish(active.device, self._storage_failure(upload_id, durable, exc))
                )
                break
        return out

    def _apply(self, active: _Active, action: ReceiverAction, out: list[Publish]) -> None:
        if isinstance(action, WriteData):
            active.file.append(action.offset, action.data)
        elif isinstance(action, Discard):
            log.warning("upload %s: hash mismatch, discarded", active.machine.upload_id)
            active.file.truncate()
        elif isinstance(action, Complete):
            receipt = self.store.complete(active.file, active.state, action.sha256, self._utc_now())
            self._active.pop(active.machine.upload_id, None)
            self.counters.verified += 1
            log.info(
                "verified %s (%d bytes) from %s", receipt.segment, receipt.size, receipt.device
            )
            if self._on_verified is not None:
                self._on_verified(receipt)
        elif isinstance(action, SendAck):
            active.file.sync()  # every byte this ack promises is on stable storage first
            out.append(self._publish(active.device, action.ack))

    def _answer_verified(self, receipt: Receipt, in_reply_to: InReplyTo) -> Ack:
        if not self.store.segment_intact(receipt):
            text = f"{receipt.segment} is missing or damaged at the receiver; an operator must act"
            log.error("upload %s: %s", receipt.upload_id, text)
            return failed_ack(
                receipt.upload_id, committed=0, code=CODE_STORAGE_ERROR,
                in_reply_to=in_reply_to, message=text,
            )  # fmt: skip
        return Ack(
            upload_id=receipt.upload_id,
            state="verified",
            committed=receipt.size,
            in_reply_to=in_reply_to,
            sha256=receipt.sha256,
        )

    def _storage_failure(
        self,
        upload_id: str,
        durable: int,
        exc: ReceiverStorageError,
        in_reply_to: InReplyTo = "chunk",
    ) -> Ack:
        self.counters.storage_errors += 1
        log.error("upload %s: %s", upload_id, exc)
        code = CODE_STORAGE_FULL if exc.full else CODE_STORAGE_ERROR
        return failed_ack(
            upload_id, committed=durable, code=code, in_reply_to=in_reply_to,
            message=str(exc)[:500],
        )  # fmt: skip

    def _publish(self, device: str, ack: Ack) -> Publish:
        return Publish(self.topics.device(device, DeviceChannel.UPLOAD_ACK), encode_control(ack))

    def _drop(self, upload_id: str) -> None:
        active = self._active.pop(upload_id, None)
        if active is not None:
            active.file.close()


__all__ = [
    "CODE_CONFLICT",
    "EvidenceReceiver",
    "EvidenceReceiverConfig",
    "ReceiverCounters",
]
