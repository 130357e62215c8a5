"""The connected camera: the camera core in real time, joined to MQTT by a few small tasks.

One loop owns the camera: it reads the clock, lets the driver (the simulated world, a scenario, or
bench hardware) move media and inputs up to now, and moves what the camera produced into the
journal and the upload manager. Around it, in one ``TaskGroup``:

- the MQTT link (``device.mqtt.MqttLink``): persistent session, Last Will, reconnects;
- the publisher: every event, reply and broadcast goes through the on-disk journal first and is
  published in order once connected, so nothing made offline is lost and a crash replays it;
- the uploader: the upload manager's offers and chunks, flow-controlled by the receiver's acks;
- the receiver of incoming messages: commands (one reply each), upload acks, group broadcasts.
  Nothing a peer sends can stop the daemon: every message is handled inside a guard that logs.
- with a hardware backend (``device.backends``), the two tasks of its ``HardwareShell``: one
  hands its events to the camera's hub through a ``HardwareBridge`` and wakes the camera loop,
  the other sends the outputs (LEDs, tones, haptics, display) the bridge derives after each step
  of the loop, in order. The backend is opened before the loop starts and closed after shutdown;
  its link counters go into telemetry as ``NAME.counter`` (``serial.crc_errors``), the bridge's
  as ``hardware.counter``. Hardware lives in real time: a backend other than ``sim`` needs
  ``speed`` 1.

Time: the camera's ``now`` is the loop clock since start, times ``speed`` (a scenario played N
times faster); nothing reads the wall clock here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from device.auditship import AuditShipper
from device.backends.base import HardwareBackend
from device.backends.bridge import HardwareBridge
from device.backends.shell import HardwareShell, check_real_time
from device.camera import Camera, CameraState
from device.commands import CommandHandler
from device.errors import ConfigError
from device.journal import EventJournal
from device.mqtt.errors import LinkDown, MqttLinkError, PublishUncertain
from device.mqtt.link import LinkMessage, MqttLink
from device.peers import apply_peer_message
from device.telemetry import merge_counters, telemetry
from device.uploads import UploadManager, UploadProgress
from protocol.errors import DecodeError
from protocol.messages import encode_message
from protocol.publish import Publish
from protocol.topics import DeviceChannel, DeviceTopic, GroupChannel, Topics

log = logging.getLogger(__name__)

TICK_S: Final = 0.05
"""Longest the loop sleeps by default (real seconds): media is fed at least this often."""
POLL_S: Final = 1.0
"""Longest the uploader and the audit shipper wait for news by default (real seconds); also how
often (camera seconds, while the loop is awake) the upload queue looks for new segments when
nothing was audited (a closed segment always is)."""
OUTPUT_FLUSH_S: Final = 1.0
"""At shutdown, how long the last outputs (LED off, "OFF") may take to reach the hardware."""


class Driver(Protocol):
    """What moves the camera's world forward: media, inputs, a scenario's timeline."""

    def advance_to(self, until: float) -> float | None:
        """Play everything due up to ``until`` (camera seconds), camera deadlines included.

        Returns how far it played: None or ``until``, or an earlier time when it stopped there
        after handing inputs to the hardware backend (the simulated hardware), so that the
        backend's task applies them at their time before the driver plays on.
        """

    def next_time(self) -> float | None:
        """When something is due next, or None."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """How the daemon runs. ``group``: the camera's group for peer activation (None: none).

    ``max_tick_s`` is the longest the camera loop sleeps (real seconds): ``TICK_S`` suits a
    driver that must be called often to feed media smoothly; a driver whose ``next_time`` says
    when it needs feeding (a lazy ``ScenarioRun``, in fleets) lets a camera sleep until its next
    deadline. ``poll_s`` is the longest the uploader and the audit shipper wait without news
    (acks, link changes, new segments and audit lines wake them), and how often the upload queue
    looks for segments when nothing was audited: a safety net.
    """

    telemetry_interval_s: float = 10.0
    group: str | None = None
    authorized: frozenset[str] | None = None
    speed: float = 1.0
    topics: Topics = field(default_factory=Topics)
    max_tick_s: float = TICK_S
    poll_s: float = POLL_S

    def __post_init__(self) -> None:
        for name in ("telemetry_interval_s", "speed", "max_tick_s", "poll_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigError(f"daemon: {name} must be a finite number > 0, not {value!r}")


@dataclass(slots=True)
class DaemonStats:
    """What the daemon's workers did, for a fleet's counters (not sent in telemetry)."""

    telemetry_sent: int = 0
    telemetry_failed: int = 0
    journal_published: int = 0
    publish_uncertain: int = 0
    """Publishes that timed out or were interrupted (journal, uploads, audit log)."""
    publish_refused: int = 0
    """Publishes the client or the broker refused (journal, uploads)."""
    handler_errors: int = 0
    """Incoming messages whose handling raised (the receiver's supervisor caught it)."""
    progress_changes: int = 0
    """Bumped whenever the upload or audit progress may have moved: a fleet reads it again only
    then (``sim.fleet.camera.FleetCamera.sample``)."""


class Daemon:
    """Runs one camera on a real clock until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        camera: Camera,
        *,
        driver: Driver,
        link: MqttLink,
        journal: EventJournal,
        uploads: UploadManager,
        config: DaemonConfig,
        backend: HardwareBackend | None = None,
        bridge: HardwareBridge | None = None,
        audit_ship: AuditShipper | None = None,
        settle: Callable[[float], None] | None = None,
    ) -> None:
        """``settle(now)``, if given, is called before the camera acts on something the driver
        does not see (a command, a peer's message, a hardware input): a lazy driver fills the
        pre-event buffer up to ``now`` there (``sim.runner.ScenarioRun.settle``)."""
        if (backend is None) != (bridge is None):
            raise ValueError("a hardware backend needs a bridge to the camera, and only then")
        self.hardware: HardwareShell | None = None
        if backend is not None and bridge is not None:
            check_real_time(backend.name, config.speed)
            self.hardware = HardwareShell(
                backend,
                bridge,
                now=self.now,
                floor=lambda: self._advanced_to,
                advance=self._advance_driver,
                wake=self._wake_loop,
            )
        self.camera = camera
        self.driver = driver
        self.link = link
        self.journal = journal
        self.uploads = uploads
        self.config = config
        self.commands = CommandHandler(camera, utc=camera.clock.utc, authorized=config.authorized)
        topics, device = config.topics, camera.device_id
        self._event_topic = topics.device(device, DeviceChannel.EVENT)
        self._reply_topic = topics.device(device, DeviceChannel.REPLY)
        self._telemetry_topic = topics.device(device, DeviceChannel.TELEMETRY)
        self._peer_topic = (
            None if config.group is None else topics.group(config.group, GroupChannel.PEER)
        )
        self._journal_changed = asyncio.Event()
        self._journal_drained = asyncio.Event()
        """Set by the publisher when it found nothing left to publish; cleared by a new entry."""
        self.audit_ship = audit_ship
        self._uploads_changed = asyncio.Event()
        self._audit_changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._advanced_to = 0.0
        """Camera time the driver has played to: hardware inputs are not placed before it."""
        self._t0 = 0.0
        self._next_telemetry = 0.0
        self._last_refresh = -math.inf
        self._telemetry: bytes | None = None
        self._settle = settle
        self._audit_seq = -1
        self.counters: dict[str, int] = {"commands": 0, "peer_messages": 0, "bad_messages": 0}
        self.stats = DaemonStats()
        self.on_change: Callable[[], None] | None = None
        """Called after anything that may have moved the camera's state, ``stats``, the upload
        or audit progress or the link: a fleet re-reads only the cameras that moved
        (``sim.fleet.totals``)."""

    @staticmethod
    def subscriptions(camera_id: str, config: DaemonConfig) -> list[str]:
        """The topic filters the link must subscribe to for this camera."""
        topics = config.topics
        subs = [
            topics.device(camera_id, DeviceChannel.COMMAND),
            topics.device(camera_id, DeviceChannel.UPLOAD_ACK),
            topics.device(camera_id, DeviceChannel.AUDIT_ACK),
        ]
        if config.group is not None:
            subs += [
                topics.group(config.group, GroupChannel.PEER),
                topics.group(config.group, GroupChannel.COMMAND),
            ]
        return subs

    def now(self) -> float:
        """The camera's clock: loop seconds since start, times ``speed``."""
        return (asyncio.get_running_loop().time() - self._t0) * self.config.speed

    def progress(self) -> UploadProgress:
        """The upload manager's progress."""
        return self.uploads.progress()

    def _changed(self, *, progress: bool = False) -> None:
        """Something moved (``progress``: the upload or audit progress may have too)."""
        if progress:
            self.stats.progress_changes += 1
        if self.on_change is not None:
            self.on_change()

    async def run(self, stop: asyncio.Event, *, finished: Callable[[], bool] | None = None) -> None:
        """Run until ``stop`` is set (or ``finished()`` returns true), then shut down cleanly.

        A hardware backend is opened first (its ``HardwareError`` propagates: nothing else has
        started) and closed last.
        """
        if self.hardware is not None:
            await self.hardware.backend.open()
        try:
            await self._run(stop, finished)
        finally:
            if self.hardware is not None:
                await self.hardware.backend.close()

    async def _run(self, stop: asyncio.Event, finished: Callable[[], bool] | None) -> None:
        self._t0 = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.link.run())
            workers = [
                tasks.create_task(self._watch_link()),
                tasks.create_task(self._publisher()),
                tasks.create_task(self._uploader()),
                tasks.create_task(self._receiver()),
                tasks.create_task(self._wake_on(stop)),
            ]
            if self.audit_ship is not None:
                workers.append(tasks.create_task(self._audit_shipper(self.audit_ship)))
            if self.hardware is not None:
                workers += [
                    tasks.create_task(self.hardware.receive()),
                    tasks.create_task(self.hardware.send()),
                ]
            try:
                await self._main(stop, finished)
            finally:
                if self.camera.state is not CameraState.OFF:
                    # Ctrl-C or SIGTERM: stop the recording and close its segment, as a switch-off.
                    self.camera.power_off(self.now(), "daemon stopped")
                    self._changed(progress=True)
                self._show()
                if self.hardware is not None:
                    await self.hardware.flush(OUTPUT_FLUSH_S)
                await self._flush_journal_briefly()
                for worker in workers:
                    worker.cancel()
                await self.link.close()
                self.journal.close()

    # -- the camera loop ------------------------------------------------------------------------

    async def _main(self, stop: asyncio.Event, finished: Callable[[], bool] | None) -> None:
        while not stop.is_set():
            now = self.now()
            # Not past where a hardware input held back after a serial loss may still belong.
            until = now if self.hardware is None else self.hardware.horizon(now)
            reached = self.driver.advance_to(until)
            self._advanced_to = until if reached is None else reached
            self._collect(now)
            self._show()
            self._changed()
            if finished is not None and finished():
                return
            await self._sleep_until_due(stop)

    def _collect(self, now: float) -> None:
        """Move what the camera produced into the journal and the upload manager."""
        camera = self.camera
        for event in camera.outbox.drain():
            self._journal(self._event_topic, encode_message(event))
        while camera.outbox.group:
            message = camera.outbox.group.popleft()
            if self._peer_topic is not None:
                self._journal(self._peer_topic, encode_message(message))
        audited = camera.audit.next_seq
        if audited != self._audit_seq:
            # A segment closed, a recording was categorized...: every such change is audited.
            self._audit_seq = audited
            self._audit_changed.set()  # new lines: ship them now rather than at the next poll
            self._refresh_uploads(now)
        elif now - self._last_refresh >= self.config.poll_s:
            self._refresh_uploads(now)
        if now >= self._next_telemetry:
            self._next_telemetry = now + self.config.telemetry_interval_s
            self._send_telemetry(now)

    def _refresh_uploads(self, now: float) -> None:
        self._last_refresh = now
        self.uploads.set_critical(self.camera.critical)
        self.uploads.refresh(now)
        self._uploads_changed.set()
        self.stats.progress_changes += 1

    def _journal(self, topic: str, payload: bytes) -> None:
        self.journal.append(topic, payload)
        self._journal_drained.clear()
        self._journal_changed.set()

    def _show(self) -> None:
        """Queue what the hardware should show now: the camera's indications, status changes."""
        if self.hardware is not None:
            self.hardware.show(self.camera.indicator.drain())

    def _send_telemetry(self, now: float) -> None:
        progress = self.uploads.progress()
        groups: list[tuple[str, Mapping[str, int]]] = [("", self.counters)]
        if self.audit_ship is not None:
            groups.append(("", self.audit_ship.progress().counters()))
        if self.hardware is not None:
            groups += self.hardware.telemetry_counters()
        message = telemetry(
            self.camera,
            now,
            upload=progress.to_message(),
            segments=progress.queued_segments,
            counters=merge_counters(*groups),
        )
        # Telemetry is a snapshot: the latest one is published when connected, never queued.
        self._telemetry = encode_message(message)
        self._journal_changed.set()

    async def _sleep_until_due(self, stop: asyncio.Event) -> None:
        """Sleep until the next deadline (at most ``max_tick_s``), or until woken.

        The wait is timed from now, when the loop goes to sleep, not from the start of its
        iteration: the work done in the iteration is not added to it.
        """
        target = self._next_telemetry
        for due in (self.driver.next_time(), self.uploads.next_deadline()):
            if due is not None and due < target:
                target = due
        wait_s = max(0.0, min(self.config.max_tick_s, (target - self.now()) / self.config.speed))
        self._wake.clear()
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._wake.wait()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        # One waiter for the daemon's life rather than two tasks per sleep of the camera loop.
        await stop.wait()
        self._wake.set()

    async def _flush_journal_briefly(self) -> None:
        """On shutdown, give connected publishing a moment to empty the journal."""
        self._collect(self.now())
        self._changed(progress=True)
        if not self.link.connected.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._journal_drained.wait()

    # -- hardware -------------------------------------------------------------------------------

    def _advance_driver(self, until: float) -> None:
        """Play the camera's world up to a hardware input's time, before it is applied.

        Inputs the driver hands to the backend on the way (the simulated hardware's) queue
        behind the one being applied.
        """
        while (reached := self.driver.advance_to(until)) is not None and reached < until:
            pass
        self._advanced_to = max(self._advanced_to, until)
        if self._settle is not None:
            self._settle(until)

    def _wake_loop(self) -> None:
        self._wake.set()

    # -- workers --------------------------------------------------------------------------------

    async def _watch_link(self) -> None:
        while True:
            await self.link.connected.wait()
            self.uploads.link_up(self._max_message_size(), self.now())
            if self.audit_ship is not None:
                self.audit_ship.link_up(self.now(), max_message_size=self._max_message_size())
            self._uploads_changed.set()
            self._audit_changed.set()
            self._journal_changed.set()
            self._changed(progress=True)
            await self.link.disconnected.wait()
            self.uploads.link_down(self.now())
            if self.audit_ship is not None:
                self.audit_ship.link_down(self.now())
            self._changed(progress=True)

    def _max_message_size(self) -> int | None:
        limit = self.link.max_packet_size
        # Room for the fixed header, topic and MQTT 5 properties of an upload chunk's PUBLISH.
        return None if limit is None else max(1024, limit - 512)

    async def _publisher(self) -> None:
        """Publish the journal in order, once connected; mark each published entry."""
        while True:
            await self.link.connected.wait()
            snapshot, self._telemetry = self._telemetry, None
            if snapshot is not None:
                try:
                    await self.link.publish(self._telemetry_topic, snapshot, qos=0)
                    self.stats.telemetry_sent += 1
                except MqttLinkError:
                    self.stats.telemetry_failed += 1
                self._changed()
            entries = self.journal.pending()
            if not entries:
                self._journal_drained.set()
                self._journal_changed.clear()
                await self._journal_changed.wait()
                continue
            for entry in entries:
                try:
                    await self.link.publish(entry.topic, entry.payload, qos=1)
                except PublishUncertain:
                    self.stats.publish_uncertain += 1
                    self._changed()
                    break  # unknown: publish it again (receivers drop duplicates by ID)
                except MqttLinkError as error:
                    if not isinstance(error, LinkDown):
                        self.stats.publish_refused += 1
                        self._changed()
                    log.info("journal publish paused: %s", error)
                    break
                self.journal.mark_published(entry.seq)
                self.stats.journal_published += 1
                self._changed()

    async def _uploader(self) -> None:
        """Carry out the upload manager's publishes; wake on acks, link changes and deadlines.

        Publishes are not awaited one by one: the receiver's acks pace the upload (the sender's
        window), and waiting for the broker's PUBACKs before the next poll cost a round trip
        per batch. The tasks start in order, so the chunks go out in order.
        """
        async with asyncio.TaskGroup() as publishing:
            while True:
                await self.link.connected.wait()
                now = self.now()
                self.uploads.handle_timeout(now)
                publishes = self.uploads.poll(now)
                self._changed(progress=True)
                if publishes:
                    for publish in publishes:
                        publishing.create_task(self._publish_upload(publish))
                    await asyncio.sleep(0)  # let them reach paho before polling again
                    continue
                deadline = self.uploads.next_deadline()
                poll_s = self.config.poll_s
                wait_s = poll_s if deadline is None else (deadline - now) / self.config.speed
                self._uploads_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(wait_s, poll_s))):
                        await self._uploads_changed.wait()

    async def _publish_upload(self, publish: Publish) -> None:
        try:
            await self.link.publish(publish.topic, publish.payload, qos=publish.qos)
        except PublishUncertain:
            # May arrive later; the ack timeout resends what the receiver did not commit.
            self.stats.publish_uncertain += 1
        except LinkDown:
            pass  # the watcher tells the manager; it re-offers after the reconnect
        except MqttLinkError as error:
            self.stats.publish_refused += 1
            log.warning("upload publish refused: %s", error)
        self._changed()

    async def _audit_shipper(self, shipper: AuditShipper) -> None:
        """Ship the audit log's new lines, paced by the receiver's acks (docs/protocol.md)."""
        audit = self.camera.audit
        while True:
            await self.link.connected.wait()
            now = self.now()
            if audit.unsynced:
                audit.sync()  # ship only lines that would survive a power loss
            shipper.handle_timeout(now)
            for publish in shipper.poll(now):
                try:
                    await self.link.publish(publish.topic, publish.payload, qos=publish.qos)
                except PublishUncertain:
                    self.stats.publish_uncertain += 1
                except LinkDown:
                    pass
                self._changed(progress=True)
            if (problem := shipper.take_problem()) is not None:
                log.warning("audit shipping stopped: %s", problem.message)
                self.camera.report_fault(
                    "audit_shipping_stopped",
                    problem.message,
                    now,
                    problem=problem.code,
                    offset=problem.offset,
                    remote=problem.remote,
                )
                self._wake.set()
            self._changed(progress=True)
            deadline = shipper.next_deadline()
            poll_s = self.config.poll_s
            wait_s = poll_s if deadline is None else (deadline - now) / self.config.speed
            self._audit_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(wait_s, poll_s))):
                    await self._audit_changed.wait()

    async def _receiver(self) -> None:
        async for message in self.link.messages():
            try:
                self._handle(message)
            except Exception:  # a supervisor: nothing a peer sends may stop the daemon
                self.counters["bad_messages"] += 1
                self.stats.handler_errors += 1
                log.exception("message on %s could not be handled", message.topic)
            self._changed(progress=True)

    def _handle(self, message: LinkMessage) -> None:
        now = self.now()
        try:
            topic = self.config.topics.parse(message.topic)
        except DecodeError:
            self.counters["bad_messages"] += 1
            return
        if isinstance(topic, DeviceTopic):
            if topic.device != self.camera.device_id:
                return  # not ours (amqtt sends retained messages nobody asked for)
            if topic.channel is DeviceChannel.COMMAND:
                self._command(message.payload, now)
            elif topic.channel is DeviceChannel.UPLOAD_ACK:
                self.uploads.on_message(message.topic, message.payload, now)
                self._uploads_changed.set()
            elif topic.channel is DeviceChannel.AUDIT_ACK and self.audit_ship is not None:
                self.audit_ship.on_message(message.topic, message.payload, now)
                self._audit_changed.set()
            return
        if topic.group != self.config.group:
            return
        if topic.channel is GroupChannel.COMMAND:
            self._command(message.payload, now)
        elif topic.channel is GroupChannel.PEER:
            self._peer(message.payload, now)
        self._wake.set()

    def _command(self, payload: bytes, now: float) -> None:
        if self._settle is not None:
            self._settle(now)
        self.counters["commands"] += 1
        self._journal(self._reply_topic, self.commands.handle(payload, now))
        self._wake.set()

    def _peer(self, payload: bytes, now: float) -> None:
        if self._settle is not None:
            self._settle(now)
        try:
            if apply_peer_message(self.camera, payload, now):
                self.counters["peer_messages"] += 1
        except DecodeError as error:
            self.counters["bad_messages"] += 1
            log.info("bad peer message: %s", error)
