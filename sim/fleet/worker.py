"""A fleet worker process: its share of the cameras on one event loop, reporting to the parent.

The parent starts each worker with ``multiprocessing`` (spawn) and a pipe. The worker:

1. measures its RSS (the baseline), makes its cameras (data directories, identities) and sends
   their public keys (``Keys``), then ``Ready``;
2. on ``Start`` (a ``time.monotonic`` instant, which every process on the host shares) starts
   camera ``i`` at ``i / connect_rate`` fleet seconds, so connections are staggered;
3. reports its cameras' totals every second in a ``WorkerReport`` to the parent (kept up to date
   from the cameras that moved, ``sim.fleet.totals``); once every camera is connected and before
   any records, settles its heap and measures its idle CPU and RSS; gives freed heap memory back
   to the OS every few seconds;
4. at the end of the duration (or on ``Stop``) takes the final CPU and RSS, stops every camera
   cleanly (a recording in progress is closed, the journal flushed, the offline status sent),
   and sends the final report.

Errors are counted, not raised: log records of level ERROR (supervisors log what they catch),
every ``MQTT link down`` the links log (a failed connect or a dropped connection), and the
cameras' own counters (``sim.fleet.camera``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import itertools
import logging
import signal
from collections import Counter
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Final

from device.mqtt.settings import BrokerSettings
from sim.fleet.camera import FleetCamera, live_options
from sim.fleet.config import FleetConfig
from sim.fleet.messages import Failed, FinalReport, Keys, Ready, Report, Start, Stop
from sim.fleet.plan import plan_cameras, worker_indices
from sim.fleet.process import heap_trimmer, raise_fd_limit
from sim.fleet.stats import WorkerReport, cpu_seconds, rss_bytes
from sim.fleet.tally import LogTally, tolerate_closed_socket_writes
from sim.fleet.totals import CameraTotals

log = logging.getLogger(__name__)

REPORT_S: Final = 1.0
"""How often a worker reports to the parent (``sim.fleet.totals`` keeps that cheap)."""
IDLE_SETTLE_S: Final = 2.0
"""After the last camera connected, how long before the idle CPU and memory are measured."""
TRIM_S: Final = 5.0
"""How often a worker gives freed heap memory back to the OS (``process.heap_trimmer``)."""
SHUTDOWN_S: Final = 60.0
"""How long the cameras get to stop cleanly."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker is told: its index, the fleet, and the broker to use."""

    worker: int
    config: FleetConfig
    broker: BrokerSettings
    verbose: int = 0


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """The worker process's entry point (``multiprocessing`` target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent says when to stop
    raise_fd_limit()
    tally = LogTally.install(spec.verbose)
    try:
        asyncio.run(Worker(spec, conn, tally).run())
    except Exception as exc:  # a supervisor: tell the parent, whatever it was
        log.exception("fleet worker %d failed", spec.worker)
        with contextlib.suppress(OSError):
            conn.send(Failed(spec.worker, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class Worker:
    """One worker's cameras and its conversation with the parent (see the module docstring)."""

    def __init__(self, spec: WorkerSpec, conn: Connection, tally: LogTally) -> None:
        self.spec = spec
        self.config = spec.config
        self.conn = conn
        self.tally = tally
        self.totals = CameraTotals()
        self.cameras: list[FleetCamera] = self.totals.cameras
        self.playing: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()
        self.orphaned = False
        """The parent is gone (its pipe closed): the cameras stop, nothing more is sent."""
        self._inbox: asyncio.Queue[Start | Stop] = asyncio.Queue()
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._baseline = 0
        self._setup_cpu = 0.0
        self._idle: tuple[int, float, float] | None = None
        self._connected_at: float | None = None
        self._idle_from: tuple[float, float] | None = None
        self._idle_missed = False
        self._first_action_s = float("inf")
        """When the first of this worker's cameras does more than power on (fleet seconds)."""
        self._end: tuple[float, int, float] | None = None
        self._tally_at_end: Counter[str] = Counter()

    async def run(self) -> None:
        """Make the cameras, wait for ``Start``, run them to the end, report."""
        loop = asyncio.get_running_loop()
        tolerate_closed_socket_writes(loop)
        loop.add_reader(self.conn.fileno(), self._readable)
        try:
            self._make_cameras()
            start = await self._inbox.get()
            if isinstance(start, Stop):
                return
            self._t0 = start.t0
            self._cpu0 = cpu_seconds()
            await self._play()
        finally:
            if not self.orphaned:
                loop.remove_reader(self.conn.fileno())

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if isinstance(message, Stop):
                    self.stop.set()
                self._inbox.put_nowait(message)
        except (EOFError, OSError):  # the parent is gone: stop the cameras and leave
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.orphaned = True
            self.stop.set()
            self._inbox.put_nowait(Stop())

    def _send(self, message: Keys | Ready | Report | FinalReport) -> None:
        if self.orphaned:
            return
        try:
            self.conn.send(message)
        except OSError:
            self.orphaned = True
            self.stop.set()

    def _make_cameras(self) -> None:
        gc.collect()
        self._baseline = rss_bytes()
        cpu = cpu_seconds()
        config = self.config
        plans = plan_cameras(config, worker_indices(config, self.spec.worker))
        utc_now = dt.datetime.now(dt.UTC)
        for plan in plans:
            options = live_options(config, config.camera_dirs / plan.device_id, self.spec.broker)
            self.totals.add(FleetCamera(plan, options, utc_now=utc_now))
        self._first_action_s = min(
            (
                camera.plan.start_s + entry.at_s
                for camera in self.cameras
                for entry in camera.plan.scenario.timeline
                if entry.action != "power_on"
            ),
            default=float("inf"),
        )
        _settle_heap()
        self._setup_cpu = cpu_seconds() - cpu
        keys = {camera.device_id: camera.public_key() for camera in self.cameras}
        self._send(Keys(self.spec.worker, keys))
        self._send(Ready(self.spec.worker))

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        end = self._t0 + self.config.duration_s
        async with asyncio.TaskGroup() as tasks:
            starter = tasks.create_task(self._start_cameras(tasks))
            reporter = tasks.create_task(self._report_loop())
            with_deadline = tasks.create_task(self._wait_until(end))
            await self.stop.wait()
            self._end = (loop.time() - self._t0, rss_bytes(), cpu_seconds() - self._cpu0)
            self._tally_at_end = Counter(self.tally.errors)
            for task in (starter, reporter, with_deadline):
                task.cancel()
            final = self._report(final=True)  # counters at the end of the window
            try:
                async with asyncio.timeout(SHUTDOWN_S):
                    await self._cameras_stopped()
            except TimeoutError:
                late = [task for task in self.playing if not task.done()]
                final.errors["shutdown_timeout"] = len(late)
                for task in late:
                    task.cancel()
        self._send_final(final)

    async def _wait_until(self, end: float) -> None:
        await asyncio.sleep(max(0.0, end - asyncio.get_running_loop().time()))
        self.stop.set()

    async def _start_cameras(self, tasks: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        for camera in sorted(self.cameras, key=lambda c: c.plan.start_s):
            delay = self._t0 + camera.plan.start_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.playing.append(tasks.create_task(camera.play(self.stop)))

    async def _cameras_stopped(self) -> None:
        if self.playing:
            await asyncio.wait(self.playing)

    async def _report_loop(self) -> None:
        trim = heap_trimmer()
        every = max(1, round(TRIM_S / REPORT_S))
        for beat in itertools.count():
            report = self._report(final=False)
            self._send(Report(report))
            self._watch_idle(report)
            if beat % every == every - 1:
                trim()
            await asyncio.sleep(REPORT_S)

    def _watch_idle(self, report: WorkerReport) -> None:
        """Measure idle RSS and CPU: every camera connected, settled, and none recording yet.

        If a camera records before that, the idle figures stay unmeasured (None).
        """
        if self._idle is not None or self._idle_missed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time() - self._t0
        recording = report.recording > 0 or report.recordings > 0
        if self._idle_from is None:
            if recording:
                self._idle_missed = True
            elif report.connected == len(self.cameras):
                if self._connected_at is None:
                    self._connected_at = now
                if now - self._connected_at >= IDLE_SETTLE_S:
                    # What connecting made lives as long as the cameras: freeze it too, before
                    # the window rather than in it (a full collection takes a few hundred ms).
                    _settle_heap()
                    self._idle_from = (loop.time() - self._t0, cpu_seconds())
            return
        since, cpu = self._idle_from
        if recording or now - since >= self._idle_window_s(since):
            spent = cpu_seconds() - cpu
            gc.collect()  # cheap now: only what the window made is not frozen
            self._idle = (rss_bytes(), spent, now - since)

    def _idle_window_s(self, since: float) -> float:
        """Up to a telemetry interval, ending before the first recording of this worker."""
        first = self._first_action_s - since - 2 * REPORT_S
        return max(0.5, min(self.config.telemetry_interval_s, first))

    def _report(self, *, final: bool) -> WorkerReport:
        loop = asyncio.get_running_loop()
        report = WorkerReport(worker=self.spec.worker, cameras=len(self.cameras), final=final)
        errors: Counter[str] = Counter(self.tally.errors)
        self.totals.update(full=final)
        self.totals.fill(report, errors)
        if final:
            missing = len(self.cameras) - report.connected
            if missing:
                errors["not_connected_at_end"] += missing
        report.errors = dict(errors)
        report.warnings = dict(self.tally.warnings)
        report.baseline_rss_bytes = self._baseline
        report.setup_cpu_s = self._setup_cpu
        if self._idle is not None:
            report.idle_rss_bytes, report.idle_cpu_s, report.idle_window_s = self._idle
        if self._end is not None:
            report.elapsed_s, report.rss_bytes, report.cpu_s = self._end
        else:
            report.elapsed_s = loop.time() - self._t0
            report.rss_bytes = rss_bytes()
            report.cpu_s = cpu_seconds() - self._cpu0
        return report

    def _send_final(self, final: WorkerReport) -> None:
        # Counters that moved during the shutdown (the last telemetry, the offline status) are
        # not the window's; errors logged during the shutdown are still errors.
        late = Counter(self.tally.errors) - self._tally_at_end
        errors = Counter(final.errors) + late
        self._send(FinalReport(replace(final, errors=dict(errors))))


def _settle_heap() -> None:
    """Collect garbage, then freeze what survives: the cameras live as long as the worker, and
    the collector's full passes over hundreds of thousands of their objects cost a worker of
    1,000 cameras about 0.15 s each (half its idle CPU)."""
    gc.collect()
    gc.freeze()
