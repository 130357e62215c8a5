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

``sample`` reads the camera's counters (``CameraSample``) for a worker's report; ``watch``
has the camera say when they may have moved (its daemon's ``on_change``, its start, its crash),
so that a worker re-reads only those (``sim.fleet.totals``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

from device.camera import CameraState
from device.daemon import DaemonStats
from device.mqtt.settings import BrokerSettings
from sim.feed import FeedOptions
from sim.fleet.config import IDLE_POLL_S, MEDIA_BATCH_S, FleetConfig
from sim.fleet.plan import CameraPlan
from sim.live import LiveCamera, LiveOptions
from sim.media import derive_seed

log = logging.getLogger(__name__)

_RECORDING = frozenset({CameraState.RECORDING, CameraState.POST_EVENT})

COUNTED: Final = (
    "started",
    "connected",
    "buffering",
    "recording",
    "recordings",
    "telemetry_sent",
    "events_published",
    "uploading",
    "segments_verified",
    "bytes_verified",
    "segments_pending",
)
"""The ``WorkerReport`` counts a camera adds to, in the order of ``CameraSample.counts``."""


class CameraSample(NamedTuple):
    """One camera's share of a worker's report: ``COUNTED`` in order, and its error counts."""

    counts: tuple[int, ...]
    errors: tuple[tuple[str, int], ...]


NOT_STARTED: Final = CameraSample((0,) * len(COUNTED), ())


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
        self.last = NOT_STARTED
        """The sample a worker's totals hold for this camera (``sim.fleet.totals``)."""
        self._moved: Callable[[], None] | None = None
        self._progress: tuple[int, tuple[int, int, int, int, bool]] = (-1, (0, 0, 0, 0, False))
        """``(progress_changes, progress counts)`` at the last read of the upload and audit
        progress, which is read again only when the daemon says it may have moved."""

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
        self._changed()
        try:
            await self.live.play(stop, until_uploaded=False)
        except Exception:  # a supervisor: one camera's failure must not stop the fleet
            self.crashed = True
            self._changed()
            log.exception("camera %s stopped", self.device_id)

    def watch(self, moved: Callable[[FleetCamera], None]) -> None:
        """Call ``moved(self)`` whenever what ``sample`` reads may have changed."""

        def changed() -> None:
            moved(self)

        self._moved = self.live.daemon.on_change = changed

    def _changed(self) -> None:
        if self._moved is not None:
            self._moved()

    def sample(self, *, fresh: bool = False) -> CameraSample:
        """The camera's counters now (all zero before it started); ``fresh``: the upload and
        audit progress read again even if the daemon did not say they moved."""
        live = self.live
        if not self.started:
            return NOT_STARTED
        camera = live.run.camera
        state = camera.state
        stats = live.daemon.stats
        if fresh:
            self._progress = (-1, self._progress[1])
        queued, verified, verified_bytes, rejected, audit_stopped = self._progress_counts(stats)
        counts = (
            1,
            int(live.link.connected.is_set()),
            int(state is CameraState.BUFFERING),
            int(state in _RECORDING),
            len(camera.finished) + (camera.recording is not None),
            stats.telemetry_sent,
            stats.journal_published,
            int(queued > 0),
            verified,
            verified_bytes,
            queued,
        )
        errors = (
            ("telemetry_failed", stats.telemetry_failed),
            ("publish_timeout", stats.publish_uncertain),
            ("publish_refused", stats.publish_refused),
            ("upload_rejected", rejected),
            ("audit_shipping_stopped", int(audit_stopped)),
            ("camera_crashed", int(self.crashed)),
        )
        return CameraSample(counts, tuple((kind, n) for kind, n in errors if n))

    def _progress_counts(self, stats: DaemonStats) -> tuple[int, int, int, int, bool]:
        """Queued, verified segments and bytes, rejected segments, audit shipping stopped."""
        seen, counts = self._progress
        if seen != stats.progress_changes:
            progress = self.live.uploads.progress()
            counts = (
                progress.queued_segments,
                progress.verified_segments,
                progress.verified_bytes,
                progress.rejected_segments,
                self.live.audit_ship.progress().problem is not None,
            )
            self._progress = (stats.progress_changes, counts)
        return counts
