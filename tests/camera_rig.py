"""A camera on a fresh data directory with its encoder, driven in virtual time, for tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.audit import AuditLog, AuditSync
from device.battery import Battery, BatteryConfig
from device.camera import Camera
from device.clock import DeviceClock
from device.identity import DeviceIdentity
from device.policy import Durability, RecordingPolicy
from device.rules import PolicyRules
from device.store import EvidenceStore
from protocol.common import Trigger
from sim.feed import MediaFeed
from sim.media import AudioProfile, MediaSource, VideoProfile

BUTTON = Trigger(kind="button", source="button:event")
VIDEO = VideoProfile(bitrate_bps=400_000, gop_frames=30)
POLICY = RecordingPolicy(pre_event_s=5, segment_s=10, durability=Durability.NONE)


class Rig:
    """A camera on a fresh data directory with its encoder, driven in virtual time."""

    def __init__(
        self,
        root: Path,
        policy: RecordingPolicy = POLICY,
        battery: BatteryConfig | None = None,
        rules: PolicyRules | None = None,
    ) -> None:
        identity = DeviceIdentity.load_or_create(root, "cam-u", seed=3)
        clock = DeviceClock(datetime(2026, 11, 29, 14, 0, tzinfo=UTC), 0.0, "sync")
        self.audit = AuditLog.open(
            root / "audit.log",
            "cam-u",
            utc=clock.utc(0.0),
            mono_s=0.0,
            key_id=identity.key.key_id,
            signer=identity.key,
            sync=AuditSync.EXPLICIT,
        )
        self.store = EvidenceStore(root, identity, durable=False)
        self.camera = Camera(
            device_id="cam-u",
            policy=policy,
            battery=Battery(battery or BatteryConfig(), 0.0),
            store=self.store,
            audit=self.audit,
            clock=clock,
            now=0.0,
            rules=rules,
        )
        self.media = MediaSource(3, "cam-u", VIDEO, AudioProfile(bitrate_bps=16_000))
        self.camera.power_on(0.0, self.media)
        self.feed = MediaFeed(self.camera, self.media, 0.0)
        self.root = root

    def at(self, now: float) -> Camera:
        """Feed media up to ``now``, running the camera's deadlines on the way."""
        while (deadline := self.camera.next_deadline()) is not None and deadline <= now:
            self.feed.advance(deadline)
            self.camera.handle_timeout(deadline)
        self.feed.advance(now)
        return self.camera

    def audit_kinds(self) -> list[str]:
        """Kinds of the audit records written so far."""
        self.audit.sync()
        text = (self.root / "audit.log").read_text()
        return [line.split('"kind":"', 1)[1].split('"', 1)[0] for line in text.splitlines()]

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The audit records written so far (of ``kind``), as JSON objects."""
        self.audit.sync()
        lines = (self.root / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return [r for r in records if kind is None or r["kind"] == kind]
