"""Builders for the audit shipping tests: real signed audit logs, a lossy in-memory network, and
the device's shipper joined to the evidence receiver with no broker in between.

The device side is the device's own ``AuditLog`` and ``AuditShipper``; the receiver side is the
receiver's own ``EvidenceReceiver`` (``tests.receiver_support.Rig``): a message either side
returns is handed to the other as bytes, possibly dropped, duplicated or delayed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

from device.audit import AuditLog, AuditSync
from device.auditship import AuditShipConfig, AuditShipper, ShipState
from device.identity import DeviceIdentity
from protocol.publish import Publish
from protocol.topics import Topics
from tests.receiver_support import DEVICE, Rig

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TOPICS = Topics()
FAST = AuditShipConfig(
    max_message_bytes=2048, ack_timeout_s=1.0, retry_base_s=0.1, retry_max_s=1.0, durable=False
)


@dataclass
class Camera:
    """A device's data directory: identity, audit log (opened with its signer) and shipper."""

    root: Path
    device: str = DEVICE
    config: AuditShipConfig = FAST
    checkpoint_every: int = 4
    identity: DeviceIdentity = field(init=False)
    log: AuditLog = field(init=False)
    shipper: AuditShipper = field(init=False)
    records: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.identity = DeviceIdentity.load_or_create(self.root, self.device, seed=7)
        self.log = self.open_log()
        self.shipper = self.new_shipper()

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.log"

    def open_log(self) -> AuditLog:
        return AuditLog.open(
            self.audit_path,
            self.device,
            utc=T0,
            mono_s=0.0,
            signer=self.identity.key,
            sync=AuditSync.EXPLICIT,
            checkpoint_every=self.checkpoint_every,
        )

    def new_shipper(self, seed: int = 1) -> AuditShipper:
        """The shipper a (re)started device builds on the same data directory."""
        return AuditShipper(
            self.audit_path,
            self.root / "uploads",
            self.device,
            TOPICS,
            config=self.config,
            rng=random.Random(seed),
        )

    def write(self, count: int, *, pad: int = 40) -> None:
        """Append ``count`` records (a checkpoint follows every ``checkpoint_every``)."""
        for _ in range(count):
            self.records += 1
            when = T0 + timedelta(seconds=self.records)
            self.log.append("test", when, float(self.records), n=self.records, pad="x" * pad)
        self.log.sync()

    def data(self) -> bytes:
        return self.audit_path.read_bytes()


@dataclass
class Net:
    """One direction of a lossy link: ``drop`` and ``dup`` probabilities, ``hold`` the chance a
    message waits for a later step (so messages overtake each other)."""

    rng: random.Random
    drop: float = 0.0
    dup: float = 0.0
    hold: float = 0.0
    queue: list[Publish] = field(default_factory=list)

    def send(self, publishes: list[Publish]) -> None:
        for publish in publishes:
            if self.rng.random() < self.drop:
                continue
            self.queue.append(publish)
            if self.rng.random() < self.dup:
                self.queue.append(publish)

    def take(self) -> list[Publish]:
        now: list[Publish] = []
        later: list[Publish] = []
        for publish in self.queue:
            (later if self.rng.random() < self.hold else now).append(publish)
        if not now and later:
            now.append(later.pop(0))
        self.queue = later
        self.rng.shuffle(now)
        return now


@dataclass
class Link:
    """The shipper and a receiver rig joined by two ``Net`` s, on a virtual clock."""

    camera: Camera
    rig: Rig
    up: Net
    down: Net
    now: float = 0.0
    steps: int = 0
    sent: list[int] = field(default_factory=list)
    """Size of every range message the shipper published."""

    @classmethod
    def lossless(cls, camera: Camera, rig: Rig) -> Link:
        return cls(camera, rig, Net(random.Random(0)), Net(random.Random(1)))

    def step(self) -> None:
        """One round: the shipper's output, then one delivery each way (or a timer)."""
        shipper = self.camera.shipper
        self.steps += 1
        out = shipper.poll(self.now)
        self.sent += [len(publish.payload) for publish in out]
        self.up.send(out)
        if not self.up.queue and not self.down.queue:
            deadline = shipper.next_deadline()
            self.now = max(self.now + 0.001, deadline or 0.0)
            shipper.handle_timeout(self.now)
            return
        for publish in self.up.take():
            self.down.send(self.rig.receiver.on_message(publish.topic, publish.payload, self.now))
        for publish in self.down.take():
            shipper.on_message(publish.topic, publish.payload, self.now)
        self.now += 0.001

    def run(self, until: Callable[[], bool] | None = None, *, max_steps: int = 20_000) -> None:
        """Step until ``until`` (default: every byte of the log acked) or the shipper stops."""
        done = until or self.all_acked
        self.camera.shipper.link_up(self.now)
        for _ in range(max_steps):
            if done() or self.camera.shipper.state is ShipState.STOPPED:
                return
            self.step()
        raise AssertionError(f"not done after {max_steps} steps: {self.camera.shipper.progress()}")

    def all_acked(self) -> bool:
        return self.camera.shipper.progress().acked_bytes == len(self.camera.data())

    def copy(self) -> bytes:
        path = self.rig.receiver.store.audit_path(self.camera.device)
        return path.read_bytes() if path.exists() else b""


async def ship_over_mqtt(
    client: aiomqtt.Client,
    shipper: AuditShipper,
    *,
    until: Callable[[], bool],
    duplicate: bool = False,
    between: Callable[[], None] | None = None,
) -> None:
    """A device's shipping loop over a connected aiomqtt client, on the event loop's clock.

    ``duplicate`` publishes every range twice; ``between`` runs after each round (to grow the
    log while shipping).
    """
    loop = asyncio.get_running_loop()
    await client.subscribe(shipper.ack_topic, qos=1)
    shipper.link_up(loop.time())
    messages = aiter(client.messages)
    try:
        while not until() and shipper.state is not ShipState.STOPPED:
            for publish in shipper.poll(loop.time()):
                for _ in range(2 if duplicate else 1):
                    await client.publish(publish.topic, publish.payload, qos=1)
            if between is not None:
                between()
            deadline = shipper.next_deadline()
            try:
                async with asyncio.timeout_at(min(deadline or 1e18, loop.time() + 0.2)):
                    message = await anext(messages)
            except TimeoutError:
                shipper.handle_timeout(loop.time())
                continue
            payload = message.payload
            assert isinstance(payload, bytes)
            shipper.on_message(message.topic.value, payload, loop.time())
    finally:
        shipper.link_down(loop.time())
