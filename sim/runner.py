"""Runs a scenario in virtual time: one camera, its encoder and its timeline, as fast as possible.

The camera core is the one the daemon runs; only time is simulated. Between timeline entries the
runner wakes the camera at its own deadlines (battery thresholds) and feeds it the encoder's
packets. The same scenario file and seed give a byte-identical data directory and report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Final

from device.audit import AuditLog, AuditSync
from device.battery import Battery
from device.camera import Camera, CameraState
from device.clock import DeviceClock
from device.errors import ConfigError
from device.identity import DeviceIdentity
from device.policy import Durability
from device.sensorhub import SensorHub
from device.store import EvidenceStore
from device.triggers import TriggerEvent
from protocol.common import Trigger
from sim.feed import FeedOptions, MediaFeed
from sim.media import MediaSource, derive_seed
from sim.scenario import Scenario
from sim.scenario_timeline import (
    Action,
    Activity,
    Audio,
    Button,
    Categorize,
    DoublePress,
    Gps,
    Hold,
    Imu,
    Input,
    PeerActivation,
    PeerDeactivation,
    PowerLoss,
    PowerOff,
    PowerOn,
    Press,
    RemoteActivate,
    RemoteDeactivate,
    SetClock,
    SetModeAction,
    Sleep,
    Speed,
    TimelineEntry,
    TriggerAction,
    Upload,
    Wake,
)
from sim.sensor_schedule import HardwareInputs, HardwareSink, SensorSchedule
from sim.uplink_model import UplinkModel

Progress = Callable[[float, float], None]
"""Called with (virtual seconds done, virtual seconds in all)."""


@dataclass(slots=True)
class RunStats:
    """What the run did, beyond what the store holds."""

    packets: int = 0
    boots: int = 0
    power_losses: int = 0
    decisions: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class ActivitySpan:
    """What the officer was doing, when: the compliance report's ground truth."""

    context: str
    start_s: float
    end_s: float


class ScenarioRun:
    """One scenario executing against one data directory.

    ``run`` plays it in virtual time, as fast as the CPU allows. A live driver (``bwc-sim run``)
    calls ``advance_to`` with the time its clock reads, then ``finish``; ``fresh=False`` lets it
    continue a data directory a previous run left (a restarted daemon), and ``durability``
    overrides the scenario's (a live camera syncs like a real one). ``hardware_inputs`` and
    ``hardware_sink`` say where the raw inputs of button, input and speed actions go
    (``sim.sensor_schedule``): to the hub (the default), to a hardware backend, or nowhere
    (real hardware plays them). ``feed`` says how media is fed (``sim.feed.FeedOptions``): a
    lazy feed (fleets) fills a buffering camera's buffer only in ``settle`` and right before a
    timeline entry, an input or a deadline, and ``next_time`` includes a recording camera's next
    media batch.
    """

    def __init__(
        self,
        scenario: Scenario,
        out: Path,
        *,
        fresh: bool = True,
        durability: Durability | None = None,
        epoch_utc: datetime | None = None,
        hardware_inputs: HardwareInputs = "hub",
        hardware_sink: HardwareSink | None = None,
        feed: FeedOptions | None = None,
    ) -> None:
        self.feed = feed if feed is not None else FeedOptions()
        if self.feed.lazy and hardware_inputs != "hub":
            raise ConfigError("a lazy media feed plays hardware inputs to the hub only")
        if fresh:
            _require_empty(out)
        else:
            out.mkdir(parents=True, exist_ok=True)
        if durability is not None:
            scenario = replace(scenario, policy=replace(scenario.policy, durability=durability))
        self.scenario = scenario
        self.out = out
        self.stats = RunStats()
        device = scenario.device
        self.identity = DeviceIdentity.load_or_create(out, device.id, seed=device.seed)
        self.clock = DeviceClock(epoch_utc or device.epoch_utc, 0.0, device.clock_source)
        self.battery = Battery(scenario.battery, 0.0)
        self.camera = self._new_camera(0.0)
        self.hub = SensorHub(self.camera, scenario.rules)
        self.sensors = SensorSchedule(hardware_inputs, hardware_sink)
        self._feed: MediaFeed | None = None
        self.activities: list[ActivitySpan] = []
        self._sensor_actions = 0
        self.uplink = UplinkModel()
        self._next_entry = 0

    def _new_camera(self, now: float) -> Camera:
        policy = self.scenario.policy
        durable = policy.durability is not Durability.NONE
        audit = AuditLog.open(
            self.out / "audit.log",
            self.scenario.device.id,
            utc=self.clock.utc(now),
            mono_s=now,
            key_id=self.identity.key.key_id,
            signer=self.identity.key,
            sync=AuditSync.EVERY_APPEND
            if policy.durability is Durability.RECORD
            else AuditSync.EXPLICIT,
            checkpoint_every=1000,
        )
        store = EvidenceStore(
            self.out,
            self.identity,
            durable=durable,
            sync_interval_s=policy.sync_interval_s,
        )
        return Camera(
            device_id=self.scenario.device.id,
            policy=policy,
            battery=self.battery,
            store=store,
            audit=audit,
            clock=self.clock,
            now=now,
            rules=self.scenario.rules,
        )

    def run(self, progress: Progress | None = None) -> None:
        """Play the timeline to the end; a camera still on at the end is switched off cleanly."""
        duration = self.scenario.duration_s
        for entry in self.scenario.timeline:
            self._play_to(entry.at_s)
            if progress is not None:
                progress(entry.at_s, duration)
        self.finish()
        if progress is not None:
            progress(duration, duration)

    @property
    def done(self) -> bool:
        """Whether the timeline has been played to its end (``finish`` may still be due)."""
        return self._next_entry >= len(self.scenario.timeline)

    def next_time(self) -> float | None:
        """When anything happens next: a timeline entry, a sensor input or a camera deadline."""
        times = [self._next_due()]
        if not self.done:
            times.append(self.scenario.timeline[self._next_entry].at_s)
        if self._feed is not None:
            times.append(self._feed.next_time(self.feed.batch_s))
        return min((t for t in times if t is not None), default=None)

    def advance_to(self, until: float) -> float:
        """Play everything due up to ``until``: timeline entries (in order), inputs, media.

        Returns ``until``, or an earlier time when it stopped there to hand hardware inputs to
        the sink (``hardware_inputs="backend"``): the caller lets the backend deliver them, so
        they reach the camera at that time and not after what follows, then calls again.
        A lazy feed forgets the buffer of a camera that then only buffers with nothing due soon.
        """
        reached = self._play(until)
        if self.feed.lazy and self._feed is not None and self.camera.buffer.allocated:
            due = self.next_time()
            if due is None or due - reached >= self.feed.forget_after_s:
                self._feed.forget()
        return reached

    def _play(self, until: float) -> float:
        timeline = self.scenario.timeline
        end = min(until, self.scenario.duration_s)
        handed = self.sensors.handed
        while self._next_entry < len(timeline) and timeline[self._next_entry].at_s <= end:
            entry = timeline[self._next_entry]
            reached = self._advance(entry.at_s)
            if self.sensors.handed != handed:
                return reached
            self._next_entry += 1
            self._apply(entry)
        reached = self._advance(end, settle=False)
        return reached if self.sensors.handed != handed else until

    def settle(self, now: float) -> None:
        """Play to ``now`` and fill the pre-event buffer up to it (a lazy feed leaves it empty).

        For a live driver to call before the camera acts on an input the runner does not see (a
        command, a peer's message). Without a lazy feed: ``advance_to``.
        """
        if not self.feed.lazy:
            self.advance_to(now)
            return
        self._play(now)
        self._feed_to(min(now, self.scenario.duration_s))

    def _play_to(self, until: float) -> None:
        """``advance_to`` until it gets there (virtual time: the sink has what it was handed)."""
        handed = -1
        while handed != self.sensors.handed:
            handed = self.sensors.handed
            self.advance_to(until)

    def finish(self) -> None:
        """Play to the scenario's end and switch the camera off cleanly."""
        duration = self.scenario.duration_s
        self._play_to(duration)
        self._next_entry = len(self.scenario.timeline)
        self.camera.power_off(duration, "scenario ended")
        self.camera.audit.close()

    def _advance(self, until: float, *, settle: bool = True) -> float:
        """Feed media, raw sensor inputs and the camera's deadlines up to ``until``, in order.

        Returns ``until``, or the instant (at most ``until``) at which hardware inputs went to
        the sink: it stops there. ``settle=False``: nothing happens at ``until`` itself, so a
        lazy feed need not fill the buffer up to it.
        """
        while True:
            step = self._next_due()
            if step is None or step > until:
                self._feed_to(until, settle=settle)
                return until
            self._feed_to(step)
            handed = self.sensors.handed
            for at_s, deliver in self.sensors.pop_due(step):
                if self.camera.state is not CameraState.OFF:
                    deliver(self.hub, at_s)
            if (deadline := self.hub.next_deadline()) is not None and deadline <= step:
                self.hub.handle_timeout(step)
            if (deadline := self.camera.next_deadline()) is not None and deadline <= step:
                self.camera.handle_timeout(step)
            if self.sensors.handed != handed:
                return step

    def _next_due(self) -> float | None:
        times = [self.camera.next_deadline(), self.hub.next_deadline(), self.sensors.next_time()]
        return min((t for t in times if t is not None), default=None)

    def _feed_to(self, now: float, *, settle: bool = True) -> None:
        feed = self._feed
        if feed is not None and self.camera.state is not CameraState.OFF:
            before = feed.packets_made
            if settle:
                feed.settle(now)
            else:
                feed.advance(now)
            self.stats.packets += feed.packets_made - before

    def _apply(self, entry: TimelineEntry) -> None:
        now, camera, action = entry.at_s, self.camera, entry.params
        match action:
            case PowerOn():
                self._power_on(now)
            case PowerOff():
                camera.power_off(now)
            case PowerLoss():
                self._power_loss(now)
            case DoublePress(source=source):
                self._count(camera.activate(_button(source), now).accepted)
            case Hold(reason=reason):
                self._count(camera.deactivate(_button(None), reason, now).accepted)
            case Press(note=note):
                self._count(camera.press("button:event", note, now).accepted)
            case Sleep():
                self._count(camera.sleep(now).accepted)
            case Wake():
                self._count(camera.wake(now).accepted)
            case Categorize(categories=categories, case_id=case_id):
                self._count(camera.categorize(tuple(categories), case_id, now).accepted)
            case SetClock(utc=utc, source=source):
                camera.set_utc(utc, source, now)
            case _:
                self._apply_input(now, action)

    def _apply_input(self, now: float, action: Action) -> None:
        """Triggers, remote and peer requests, modes, activities and docking."""
        camera = self.camera
        match action:
            case SetModeAction(mode=mode, enabled=enabled):
                self._count(camera.set_mode(mode, now, enabled=enabled, source="button").accepted)
            case TriggerAction(kind=kind, active=active, source=source, input=name):
                event = TriggerEvent(
                    kind=kind, source=source or _INPUTS[kind], active=active, name=name or ""
                )
                self._count(camera.trigger(event, now).accepted)
            case RemoteActivate(source=source):
                event = TriggerEvent(kind="remote", source=f"mqtt:{source}")
                self._count(camera.trigger(event, now).accepted)
            case RemoteDeactivate(reason=reason, source=source):
                trigger = Trigger(kind="remote", source=f"mqtt:{source}")
                self._count(camera.deactivate(trigger, reason, now).accepted)
            case PeerActivation(peer=peer, distance_m=distance_m, master=master):
                event = TriggerEvent(
                    kind="peer",
                    source=f"peer:{peer}",
                    peer=peer,
                    group_master=master,
                    distance_m=distance_m,
                )
                self._count(camera.trigger(event, now).accepted)
            case PeerDeactivation(peer=peer, reason=reason):
                trigger = Trigger(kind="peer", source=f"peer:{peer}")
                self._count(camera.deactivate(trigger, reason, now).accepted)
            case Activity(context=context, duration=duration):
                self.activities.append(ActivitySpan(context, now, now + duration))
            case Upload(bandwidth_mbps=bandwidth):
                self.uplink.dock(now, bandwidth, camera.store.closed_segments(), camera.critical)
            case Button() | Input() | Speed() | Imu() | Audio() | Gps():
                seed = derive_seed(self.scenario.device.seed, "sensor", self._sensor_actions)
                self._sensor_actions += 1
                self.sensors.schedule(now, action, seed)
            case _:
                raise AssertionError(f"the runner does not handle {action.name}")

    def _count(self, accepted: bool) -> None:
        self.stats.decisions += 1
        self.stats.refused += not accepted

    def _power_on(self, now: float) -> None:
        if self.camera.state is not CameraState.OFF:
            return
        self.stats.boots += 1
        media = MediaSource(
            derive_seed(self.scenario.device.seed, "boot", self.stats.boots),
            self.scenario.device.id,
            self.scenario.video,
            self.scenario.audio,
            filler_seed=self.feed.filler_seed,
        )
        self.camera.power_on(now, media)
        self._feed = MediaFeed(self.camera, media, now, lazy=self.feed.lazy)

    def _power_loss(self, now: float) -> None:
        if self.camera.state is CameraState.OFF:
            return
        self.stats.power_losses += 1
        self.camera.power_loss()
        self.camera.audit.close()
        self._feed = None
        # The next power_on boots a fresh camera on the same storage, as a real one would: the
        # audit log is reopened (and repaired) and the open segment is recovered.
        self.camera = self._new_camera(now)
        self.hub = SensorHub(self.camera, self.scenario.rules)
        self.sensors.clear()


_INPUTS: Final = {
    "holster": "input:holster",
    "vehicle_lightbar": "vehicle:lightbar",
    "vehicle_siren": "vehicle:siren",
    "vehicle_door": "vehicle:door",
    "vehicle_speed": "vehicle:speed",
    "taser_armed": "taser:armed",
    "taser_trigger": "taser:trigger",
    "taser_arc": "taser:arc",
    "gunshot": "detector:gunshot",
    "foot_pursuit": "detector:imu",
    "officer_down": "detector:imu",
    "geofence": "detector:gps",
}
"""The input path each sensor trigger arrives through, for the audit log."""


def _button(source: str | None) -> Trigger:
    return Trigger(kind="button", source=f"button:{source}" if source else "button:event")


def _require_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"output directory {out} is not empty: a scenario writes a fresh device store; "
            "pick a new directory or remove it"
        )
    out.mkdir(parents=True, exist_ok=True)
