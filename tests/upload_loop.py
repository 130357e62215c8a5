"""An upload manager and an in-memory evidence receiver joined by a simulated link, in virtual time.

The receiver is the protocol's ``UploadReceiver`` behind a minimal shell (after
``sim/upload_demo.py``): it checks the manifest signature against the device's key, keeps one
receiver per upload, stores committed bytes in memory, counts how often each upload was made
final, and can be told to reject or to be busy. No tests here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from device.audit import AuditLog
from device.camera_audit import CameraAudit
from device.clock import DeviceClock
from device.errors import EvidenceError
from device.signing import verify_signed_manifest
from device.store import EvidenceStore
from device.uploads import UploadConfig, UploadManager
from protocol.errors import DecodeError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, Topics
from protocol.upload import (
    CODE_BAD_SIGNATURE,
    CODE_BUSY,
    Ack,
    ChunkCrcError,
    Complete,
    Discard,
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
from sim.linksim import LinkProfile, SimulatedLink

DEVICE = "cam-u"
TOPICS = Topics()
OFFER_TOPIC = TOPICS.device(DEVICE, DeviceChannel.UPLOAD_OFFER)
CHUNK_TOPIC = TOPICS.device(DEVICE, DeviceChannel.UPLOAD_CHUNK)
ACK_TOPIC = TOPICS.device(DEVICE, DeviceChannel.UPLOAD_ACK)
FAST = UploadConfig(ack_timeout_s=0.5, retry_base_s=1.0, retry_max_s=8.0, durable=False)
"""Short timers for virtual-time tests; no fsync of state files (the order is the same)."""

Rejecter = Callable[[Offer], Ack | None]


@dataclass(slots=True)
class Stored:
    """What the receiver holds of one upload."""

    data: bytearray = field(default_factory=bytearray)
    finals: int = 0
    order: int = -1


class ReceiverShell:
    """Many uploads of one device; 'disk' in memory, survives a simulated receiver restart."""

    def __init__(
        self,
        public_key: bytes,
        config: ReceiverConfig | None = None,
        reject: Rejecter | None = None,
    ) -> None:
        self.public_key = public_key
        self.config = config or ReceiverConfig()
        self.reject = reject
        self.busy_until = -1.0
        self.machines: dict[str, UploadReceiver] = {}
        self.stored: dict[str, Stored] = {}
        self.offers: list[str] = []
        self.offer_of: dict[str, Offer] = {}
        """The offer each receiver was built from (to rebuild it after a restart)."""
        self.rejected: list[str] = []
        self._finals = 0

    def on_offer(self, payload: bytes, now: float) -> list[bytes]:
        """Handle an offer; return the acks to send."""
        try:
            offer = decode_offer(payload)
        except DecodeError:
            return []
        self.offers.append(offer.upload_id)
        if now < self.busy_until:
            busy = failed_ack(offer.upload_id, committed=0, code=CODE_BUSY, in_reply_to="offer")
            return [encode_control(busy)]
        machine = self.machines.get(offer.upload_id)
        if machine is None:
            rejection = self._admit(offer)
            if rejection is not None:
                self.rejected.append(offer.upload_id)
                return [encode_control(rejection)]
            machine = UploadReceiver(offer, self.config)
            self.offer_of[offer.upload_id] = offer
            self.machines[offer.upload_id] = machine
            self.stored.setdefault(offer.upload_id, Stored())
        return self._apply(offer.upload_id, machine.receive_offer(offer, now))

    def on_chunk(self, payload: bytes, now: float) -> list[bytes]:
        """Handle a chunk; return the acks to send."""
        try:
            chunk = decode_chunk(payload)
        except ChunkCrcError:
            return []
        except DecodeError:
            return []
        machine = self.machines.get(chunk.upload_id)
        if machine is None:
            return [encode_control(unknown_ack(chunk.upload_id, in_reply_to="chunk"))]
        return self._apply(chunk.upload_id, machine.receive_chunk(chunk, now))

    def final(self, upload_id: str) -> bytes | None:
        """The stored bytes of an upload made final, else ``None``."""
        stored = self.stored.get(upload_id)
        return None if stored is None or not stored.finals else bytes(stored.data)

    def final_order(self) -> list[str]:
        """Upload IDs in the order they were made final."""
        done = [(s.order, uid) for uid, s in self.stored.items() if s.finals]
        return [uid for _, uid in sorted(done)]

    def _admit(self, offer: Offer) -> Ack | None:
        rejection = check_offer(offer, self.config)
        if rejection is None and self.reject is not None:
            rejection = self.reject(offer)
        if rejection is not None:
            return rejection
        try:
            verify_signed_manifest(offer.signed_manifest, self.public_key)
        except EvidenceError as exc:
            return rejected_ack(offer.upload_id, CODE_BAD_SIGNATURE, str(exc))
        return None

    def _apply(self, upload_id: str, actions: list[ReceiverAction]) -> list[bytes]:
        stored = self.stored[upload_id]
        out = []
        for action in actions:
            if isinstance(action, WriteData):
                del stored.data[action.offset :]
                stored.data += action.data
            elif isinstance(action, Complete):
                stored.finals += 1
                stored.order = self._finals
                self._finals += 1
            elif isinstance(action, Discard):
                stored.data.clear()
            elif isinstance(action, SendAck):
                out.append(encode_control(action.ack))
        return out


def camera_audit(log: AuditLog) -> CameraAudit:
    """A ``CameraAudit`` on ``log`` with the rig's clock."""
    return CameraAudit(log, DeviceClock(datetime(2026, 11, 29, 14, 0, tzinfo=UTC), 0.0, "sync"))


def new_manager(
    store: EvidenceStore,
    state_dir: Path,
    config: UploadConfig = FAST,
    audit: CameraAudit | None = None,
) -> UploadManager:
    """A manager for the rig's device."""
    return UploadManager(
        store, state_dir, device_id=DEVICE, topics=TOPICS, config=config, audit=audit
    )


class UploadLoop:
    """Runs a manager against a receiver over a ``SimulatedLink`` in virtual time."""

    def __init__(
        self,
        manager: UploadManager,
        receiver: ReceiverShell,
        profile: LinkProfile | None = None,
        *,
        seed: int = 0,
        now: float = 0.0,
    ) -> None:
        self.manager = manager
        self.receiver = receiver
        self.link = SimulatedLink(profile or LinkProfile(), seed=seed)
        self.now = now
        self.sent: list[tuple[float, Publish]] = []
        self.drop_acks = False
        """Lose every ack on its way to the device."""

    def publish(self) -> None:
        """Poll the manager and put what it publishes on the link."""
        for publish in self.manager.poll(self.now):
            self.sent.append((self.now, publish))
            self.link.send(publish.topic, publish.payload, self.now)

    def step(self, until: float) -> bool:
        """Handle the next event before ``until``; ``False`` if there is none."""
        self.publish()
        moments = [
            moment
            for moment in (self.link.next_arrival(), self.manager.next_deadline())
            if moment is not None
        ]
        if not moments or min(moments) > until:
            return False
        self.now = max(self.now, min(moments))
        if self.link.next_arrival() == min(moments):
            _, topic, payload = self.link.pop()
            self._deliver(topic, payload)
        else:
            self.manager.handle_timeout(self.now)
        self.publish()
        return True

    def run(self, until: float, done: Callable[[], bool] | None = None) -> None:
        """Run events up to virtual time ``until``, or until ``done()``."""
        while not (done is not None and done()) and self.step(until):
            pass
        if done is None or not done():
            self.now = max(self.now, until)

    def drain_link(self) -> None:
        """Drop whatever is in flight (a restart loses it)."""
        while self.link.next_arrival() is not None:
            self.link.pop()

    def _deliver(self, topic: str, payload: bytes) -> None:
        if topic == OFFER_TOPIC:
            acks = self.receiver.on_offer(payload, self.now)
        elif topic == CHUNK_TOPIC:
            acks = self.receiver.on_chunk(payload, self.now)
        else:
            if not self.drop_acks:
                self.manager.on_message(topic, payload, self.now)
            return
        for ack in acks:
            self.link.send(ACK_TOPIC, ack, self.now)


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()
