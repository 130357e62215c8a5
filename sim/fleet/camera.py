"""One camera of a fleet: the real connected camera (``sim.live.LiveCamera``), tuned for numbers.

A fleet camera is exactly what ``bwc-sim run`` runs (the camera core of a ``ScenarioRun``, its
journal, upload manager, audit shipper and MQTT link under ``device.daemon.Daemon``) with options
that make an idle camera cheap:

- a lazy media feed (``sim.feed``): a buffering camera makes no packet until something may read
  its buffer (a timeline step, a deadline, a command or peer message); a recording camera is fed
  in ``MEDIA_BATCH_S`` batches, and its emptied pre-event arena is given back;
- one payload filler block for the whole fleet (per worker process), made at the first payload;
- a camera loop that sleeps until its next deadline (telemetry, a timeline step, a media batch)
  instead of waking every 50 ms, and uploader and audit shipper woken by news, not by polling.

``sample`` adds the camera's state to a worker's report.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from pathlib import Path

from device.camera import CameraState
from device.mqtt.settings import BrokerSettings
from sim.feed import FeedOptions
from sim.fleet.config import IDLE_POLL_S, MEDIA_BATCH_S, FleetConfig
from sim.fleet.plan import CameraPlan
from sim.fleet.stats import WorkerReport
from sim.live import LiveCamera, LiveOptions
from sim.media import derive_seed

log = logging.getLogger(__name__)

_RECORDING = frozenset({CameraState.RECORDING, CameraState.POST_EVENT})


def live_options(config: FleetConfig, data_dir: Path, broker: BrokerSettings) -> LiveOptions:
    """The options of one fleet camera (see the module docstring)."""
    filler = derive_seed(config.seed, "fleet", "payload-filler")
    return LiveOptions(
        data_dir=data_dir,
        broker=broker,
        telemetry_interval_s=config.telemetry_interval_s,
        feed=FeedOptions(lazy=True, batch_s=MEDIA_BATCH_S, filler_seed=filler),
        # The loop wakes at the camera's own deadlines; this is only a safety net.
        max_tick_s=config.telemetry_interval_s,
        poll_s=IDLE_POLL_S,
    )


class FleetCamera:
    """A ``LiveCamera`` with its plan, played under a supervisor."""

    def __init__(self, plan: CameraPlan, options: LiveOptions, *, utc_now: dt.datetime) -> None:
        self.plan = plan
        self.live = LiveCamera(plan.scenario, options, utc_now=utc_now)
        self.started = False
        self.crashed = False

    @property
    def device_id(self) -> str:
        """The camera's device ID."""
        return self.plan.device_id

    def public_key(self) -> bytes:
        """The camera's signing key, for the receiver's trust store."""
        return self.live.run.identity.key.public_bytes()

    async def play(self, stop: asyncio.Event) -> None:
        """Run until ``stop``; an exception is logged and counted, never raised (a supervisor)."""
        self.started = True
        try:
            await self.live.play(stop, until_uploaded=False)
        except Exception:  # a supervisor: one camera's failure must not stop the fleet
            self.crashed = True
            log.exception("camera %s stopped", self.device_id)

    def sample(self, report: WorkerReport, errors: Counter[str]) -> None:
        """Add this camera to ``report`` and its error counts to ``errors``."""
        live = self.live
        if not self.started:
            return
        report.started += 1
        report.connected += live.link.connected.is_set()
        camera = live.run.camera
        state = camera.state
        report.buffering += state is CameraState.BUFFERING
        report.recording += state in _RECORDING
        report.recordings += len(camera.finished) + (camera.recording is not None)
        stats = live.daemon.stats
        report.telemetry_sent += stats.telemetry_sent
        report.events_published += stats.journal_published
        progress = live.uploads.progress()
        report.uploading += progress.queued_segments > 0
        report.segments_verified += progress.verified_segments
        report.bytes_verified += progress.verified_bytes
        report.segments_pending += progress.queued_segments
        for kind, count in (
            ("telemetry_failed", stats.telemetry_failed),
            ("publish_timeout", stats.publish_uncertain),
            ("publish_refused", stats.publish_refused),
            ("upload_rejected", progress.rejected_segments),
            ("audit_shipping_stopped", int(live.audit_ship.progress().problem is not None)),
            ("camera_crashed", int(self.crashed)),
        ):
            if count:
                errors[kind] += count
