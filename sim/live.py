"""A live camera: the simulated world (a scenario, or an idle shift) on a real clock, connected.

``LiveCamera`` assembles what ``bwc-sim run`` runs: the camera core of a ``ScenarioRun`` played in
real time (times ``speed``), with real durability, its data directory kept across runs, the event
journal, the upload manager and the MQTT link, under ``device.daemon.Daemon``.

With a hardware backend (``LiveOptions.backend``) the daemon joins it to the camera through a
``HardwareBridge``, and the scenario's hardware actions (``button``, ``input``, ``speed``,
``sim.sensor_schedule.HARDWARE_ACTIONS``) are played according to the backend:

- ``SimBackend``: injected into it at their times, so they reach the camera through the bridge,
  the path a bench microcontroller's inputs take;
- any other backend (``serial``): not played here at all: the hardware plays them (the fake
  bench microcontroller reads the same scenario file). Every other action (power, gestures
  handed over as such, modes, triggers, remote and peer requests, media) is played here.

Without a backend they go straight to the hub, as in virtual time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from device.auditship import AuditShipConfig, AuditShipper
from device.backends.base import HardwareBackend
from device.backends.bridge import HardwareBridge
from device.backends.sim import SimBackend
from device.daemon import POLL_S, TICK_S, Daemon, DaemonConfig
from device.journal import EventJournal
from device.mqtt.link import MqttLink, Presence
from device.mqtt.settings import BrokerSettings
from device.policy import Durability
from device.telemetry import status
from device.uploads import RejectedSegment, UploadConfig, UploadManager
from protocol.messages import encode_message
from protocol.topics import DeviceChannel, Topics
from protocol.upload import CODE_BAD_CHUNK_SIZE, CODE_TOO_LARGE, CODE_UNKNOWN_DEVICE
from sim.feed import FeedOptions
from sim.runner import ScenarioRun
from sim.scenario import Scenario, parse_scenario
from sim.sensor_schedule import HardwareInputs, HardwareSink

IDLE_SCENARIO: Final = """
[scenario]
name = "Idle camera"
duration = "168:00:00"
[device]
id = "{device}"
seed = {seed}
[media]
video = "720p30-low"
[[timeline]]
at = 0
do = "power_on"
"""
"""What ``bwc-sim run`` plays without ``--scenario``: a camera switched on, buffering."""

RETRY_AT_START: Final = frozenset({CODE_UNKNOWN_DEVICE, CODE_BAD_CHUNK_SIZE, CODE_TOO_LARGE})


def idle_scenario(device_id: str, seed: int) -> Scenario:
    """A week-long scenario whose only step is switching the camera on."""
    return parse_scenario(IDLE_SCENARIO.format(device=device_id, seed=seed), "<idle>")


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How to run a live camera."""

    data_dir: Path
    broker: BrokerSettings
    speed: float = 1.0
    upload: UploadConfig = field(default_factory=UploadConfig)
    telemetry_interval_s: float = 10.0
    group: str | None = None
    backend: HardwareBackend | None = None
    """The hardware, not yet opened (the daemon opens and closes it); None: none."""
    feed: FeedOptions = field(default_factory=FeedOptions)
    """How media is fed: fleets feed lazily (``sim.feed``) and share one filler block."""
    max_tick_s: float = TICK_S
    """Longest the camera loop sleeps (``DaemonConfig.max_tick_s``); more with a lazy feed."""
    poll_s: float = POLL_S
    """Longest the uploader and the audit shipper wait for news (``DaemonConfig.poll_s``)."""


def hardware_routing(backend: HardwareBackend | None) -> tuple[HardwareInputs, HardwareSink | None]:
    """Where a scenario's hardware actions go with ``backend`` (the module docstring)."""
    if backend is None:
        return "hub", None
    if isinstance(backend, SimBackend):
        return "backend", backend.inject
    return "external", None


class LiveCamera:
    """One scenario played on the loop's clock, connected through MQTT."""

    def __init__(self, scenario: Scenario, options: LiveOptions, *, utc_now: dt.datetime) -> None:
        self.options = options
        hardware_inputs, sink = hardware_routing(options.backend)
        self.run = ScenarioRun(
            scenario,
            options.data_dir,
            fresh=False,
            durability=Durability.RECORD,
            epoch_utc=utc_now,
            hardware_inputs=hardware_inputs,
            hardware_sink=sink,
            feed=options.feed,
        )
        camera = self.run.camera
        device = camera.device_id
        topics = Topics()
        boot_id = f"b{int(utc_now.timestamp())}"
        presence = Presence(
            topic=topics.device(device, DeviceChannel.STATUS),
            online=encode_message(
                status(camera, 0.0, online=True, reason="connected", boot_id=boot_id)
            ),
            offline=encode_message(
                status(camera, 0.0, online=False, reason="connection_lost", boot_id=boot_id)
            ),
        )
        config = DaemonConfig(
            telemetry_interval_s=options.telemetry_interval_s,
            group=options.group,
            speed=options.speed,
            topics=topics,
            max_tick_s=options.max_tick_s,
            poll_s=options.poll_s,
        )
        # One generator for the jitter of the link, the uploads and the audit shipping (each
        # ``random.Random`` is 2.5 KiB: a fleet has thousands of cameras).
        jitter = random.Random(f"live:{device}:{boot_id}")
        (options.data_dir / "journal").mkdir(parents=True, exist_ok=True)
        self.journal = EventJournal(options.data_dir / "journal" / "events.journal")
        self.uploads = UploadManager(
            camera.store,
            options.data_dir / "uploads",
            device_id=device,
            topics=topics,
            config=options.upload,
            audit=camera._trail,  # the camera's audit trail records verified uploads
            rng=jitter,
        )
        self.released = self._release_fixable()
        self.audit_ship = AuditShipper(
            camera.audit.path,
            options.data_dir / "uploads",
            device,
            topics,
            config=AuditShipConfig(durable=options.upload.durable, idle_poll_s=options.poll_s),
            rng=jitter,
        )
        self.link = MqttLink(
            options.broker,
            client_id=device,
            presence=presence,
            rng=jitter,
            subscriptions=Daemon.subscriptions(device, config),
        )
        backend = options.backend
        self.bridge = (
            None
            if backend is None
            else HardwareBridge(camera, self.run.hub, capabilities=backend.capabilities)
        )
        self.daemon = Daemon(
            camera,
            driver=self.run,
            link=self.link,
            journal=self.journal,
            uploads=self.uploads,
            config=config,
            backend=backend,
            bridge=self.bridge,
            audit_ship=self.audit_ship,
            settle=self.run.settle if options.feed.lazy else None,
        )

    def _release_fixable(self) -> list[RejectedSegment]:
        """Queue again the segments rejected for a configuration mismatch.

        ``unknown_device`` (the key was not enrolled yet), ``bad_chunk_size`` and ``too_large``
        are fixed by an operator between runs; a restart is the natural moment to try again, and
        the receiver keeps no record of rejected offers (docs/protocol.md). Signature and
        conflict rejections stay quarantined.
        """
        self.uploads.refresh(0.0)
        fixable = [r for r in self.uploads.rejected() if r.code in RETRY_AT_START]
        for rejected in fixable:
            self.uploads.release(rejected.recording, rejected.index)
        return fixable

    def all_uploaded(self) -> bool:
        """The scenario is over and every closed segment is verified (or permanently rejected)."""
        if not self.run.done or self.run.camera.state.value != "off":
            return False
        # The daemon refreshes the queue once a camera second: segments closed since (the last
        # ones, by the stop or by ``finish``) would otherwise not be counted as pending.
        self.uploads.refresh(self.daemon.now())
        progress = self.uploads.progress()
        return progress.queued_segments == 0 and self.audit_shipped()

    def audit_shipped(self) -> bool:
        """The receiver holds the whole audit log (or shipping stopped on a reported problem)."""
        progress = self.audit_ship.progress()
        if progress.problem is not None:
            return True
        return progress.acked_bytes >= self.run.camera.audit.path.stat().st_size

    async def play(self, stop: asyncio.Event, *, until_uploaded: bool) -> None:
        """Run until ``stop`` (with ``until_uploaded``: until the scenario is over and verified)."""
        finished = None
        if until_uploaded:

            def finished() -> bool:
                run, now = self.run, self.daemon.now()
                end = run.scenario.duration_s
                if run.done and now >= end and run.camera.state.value != "off":
                    # Not ``run.finish()``: it closes the audit log, which the upload manager
                    # still writes (``segment_uploaded``) until every segment is verified.
                    run.camera.power_off(end, "scenario ended")
                return self.all_uploaded()

        try:
            await self.daemon.run(stop, finished=finished)
        finally:
            self.run.camera.audit.close()
