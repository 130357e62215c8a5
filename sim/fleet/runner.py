"""The fleet's parent process: infrastructure, worker processes, live totals, the summary.

``run_fleet`` starts the broker and receiver (``sim.fleet.infra``), spawns ``workers`` processes
(``sim.fleet.worker``), enrols the keys they report at the embedded receiver, gives them one start
instant, shows their live totals (``view``) until each has sent its final report, and returns
the summary (``sim.fleet.stats.summary``). ``stop`` (Ctrl-C) ends the run early and cleanly.
A worker that fails or dies is an error of the run, not of the parent: the others carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from device.mqtt.settings import BrokerSettings
from sim.fleet.config import FleetConfig
from sim.fleet.infra import infrastructure, trust_keys
from sim.fleet.messages import Failed, FinalReport, Keys, Ready, Report, Start, Stop
from sim.fleet.plan import worker_indices
from sim.fleet.process import raise_fd_limit
from sim.fleet.stats import FleetTotals, WorkerReport, add_up, summary
from sim.fleet.worker import SHUTDOWN_S, WorkerSpec, run_worker
from sim.receiver.service import ReceiverService

VIEW_S: Final = 0.5
"""How often the live view is refreshed."""
START_MARGIN_S: Final = 0.3
"""Between sending ``Start`` and the fleet's t = 0: every worker gets it in time."""
JOIN_S: Final = 20.0
"""How long a worker may take to exit after its final report (or a ``Stop``) before SIGTERM."""
READY_BASE_S: Final = 60.0
READY_PER_CAMERA_S: Final = 0.02
"""How long the workers may take to make their cameras (keys, directories)."""

View = Callable[[FleetTotals, float], None]
"""Called about twice a second with the live totals and the fleet's duration."""


class FleetError(Exception):
    """The fleet could not be started (a worker failed before its cameras were ready)."""


class WorkerPool:
    """The worker processes, their pipes, and what they last said."""

    def __init__(self, config: FleetConfig, broker: BrokerSettings, verbose: int) -> None:
        self.config = config
        context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.conns: list[Connection] = []
        self._child_ends: list[Connection] = []
        for worker in range(config.workers):
            ours, theirs = context.Pipe()
            spec = WorkerSpec(worker=worker, config=config, broker=broker, verbose=verbose)
            process = context.Process(
                target=run_worker, args=(spec, theirs), name=f"bwc-sim-fleet-{worker}"
            )
            self.processes.append(process)
            self.conns.append(ours)
            self._child_ends.append(theirs)
        self.inbox: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        self.reports: dict[int, WorkerReport] = {}
        self.finals: dict[int, WorkerReport] = {}
        self.errors: Counter[str] = Counter()
        self.failures: list[str] = []
        self.gone: set[int] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WorkerPool]:
        """Start the processes for the block; at its end, make sure every one has exited."""
        loop = asyncio.get_running_loop()
        try:
            for index, process in enumerate(self.processes):
                process.start()
                self._child_ends[index].close()  # so the pipe reports EOF when the child exits
                loop.add_reader(self.conns[index].fileno(), self._readable, index)
            yield self
        finally:
            if not self.done():
                self.send(Stop())  # interrupted: let the workers stop their cameras cleanly
            for index, conn in enumerate(self.conns):
                if index not in self.gone:
                    loop.remove_reader(conn.fileno())
            await asyncio.to_thread(self._join)

    def _readable(self, worker: int) -> None:
        conn = self.conns[worker]
        try:
            while conn.poll():
                self.inbox.put_nowait((worker, conn.recv()))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            self.gone.add(worker)
            self.inbox.put_nowait((worker, None))

    def _join(self) -> None:
        for process in self.processes:
            if process.pid is None:
                continue  # never started
            process.join(timeout=JOIN_S)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)
        for conn in [*self.conns, *self._child_ends]:
            conn.close()

    def send(self, message: Start | Stop) -> None:
        """Tell every live worker ``message``."""
        for index, conn in enumerate(self.conns):
            if index not in self.gone:
                with contextlib.suppress(OSError):
                    conn.send(message)

    def handle(self, worker: int, message: object) -> None:
        """Record what ``worker`` said (None: its pipe closed)."""
        if isinstance(message, Report):
            self.reports[worker] = message.report
        elif isinstance(message, FinalReport):
            self.reports[worker] = self.finals[worker] = message.report
        elif isinstance(message, Failed):
            self.failures.append(f"worker {worker}: {message.message}")
            self.errors["worker_failed"] += 1
        elif (
            message is None
            and worker not in self.finals
            and not any(f.startswith(f"worker {worker}:") for f in self.failures)
        ):
            self.failures.append(f"worker {worker}: exited without a final report")
            self.errors["worker_lost"] += 1

    def done(self) -> bool:
        """Every worker has sent its final report or is gone."""
        return all(w in self.finals or w in self.gone for w in range(len(self.processes)))


async def run_fleet(
    config: FleetConfig, stop: asyncio.Event, *, view: View | None = None, verbose: int = 0
) -> dict[str, Any]:
    """Run the fleet (see the module docstring); raises ``FleetError`` if it cannot start."""
    raise_fd_limit()
    async with infrastructure(config) as (settings, receiver):
        pool = WorkerPool(config, settings, verbose)
        async with pool.running():
            keys = await _until_ready(pool, stop)
            trust_keys(receiver, keys)
            t0 = time.monotonic() + START_MARGIN_S
            pool.send(Start(t0))
            await _until_done(pool, stop, view, deadline=t0 + config.duration_s + SHUTDOWN_S + 30)
        counters = None if receiver is None else _receiver_counts(receiver)
    for worker in range(config.workers):
        if worker not in pool.finals:  # lost: none of its cameras counts as connected
            cameras = len(worker_indices(config, worker))
            last = pool.reports.get(worker) or WorkerReport(worker, cameras)
            pool.finals[worker] = replace(last, cameras=cameras, connected=0)
            pool.errors["not_connected_at_end"] += cameras
    if counters is not None and counters["storage_errors"]:
        pool.errors["receiver_storage_errors"] += counters["storage_errors"]
    duration = max((r.elapsed_s for r in pool.finals.values()), default=0.0)
    result = summary(
        pool.finals,
        cameras=config.count,
        workers=config.workers,
        duration_s=duration,
        extra_errors=pool.errors,
        receiver=counters,
    )
    if pool.failures:
        result["failures"] = pool.failures
    return result


async def _until_ready(pool: WorkerPool, stop: asyncio.Event) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    ready: set[int] = set()
    timeout = READY_BASE_S + READY_PER_CAMERA_S * pool.config.count / pool.config.workers
    try:
        async with asyncio.timeout(timeout):
            while len(ready) < pool.config.workers:
                worker, message = await pool.inbox.get()
                pool.handle(worker, message)
                if isinstance(message, Keys):
                    keys.update(message.keys)
                elif isinstance(message, Ready):
                    ready.add(worker)
                elif pool.failures or stop.is_set():
                    break
    except TimeoutError:
        pool.failures.append(f"the workers were not ready in {timeout:g} s")
    if len(ready) < pool.config.workers:
        pool.send(Stop())
        raise FleetError("; ".join(pool.failures) or "interrupted before the start")
    return keys


async def _until_done(
    pool: WorkerPool, stop: asyncio.Event, view: View | None, *, deadline: float
) -> None:
    stopping = False
    duration = pool.config.duration_s
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline - time.monotonic()):
            while not pool.done():
                if stop.is_set() and not stopping:
                    stopping = True
                    pool.send(Stop())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(VIEW_S):
                        while True:
                            worker, message = await pool.inbox.get()
                            pool.handle(worker, message)
                            if stop.is_set() or pool.done():
                                break
                if view is not None:
                    view(add_up(pool.reports.values()), duration)
    for worker in range(pool.config.workers):
        if worker not in pool.finals and worker not in pool.gone:
            pool.errors["worker_timeout"] += 1
            pool.failures.append(f"worker {worker}: no final report in time")


def _receiver_counts(receiver: ReceiverService) -> dict[str, int]:
    counters = receiver.core.counters
    return {
        "verified": counters.verified,
        "rejected": counters.rejected,
        "offers": counters.offers,
        "chunks": counters.chunks,
        "corrupt_chunks": counters.corrupt_chunks,
        "protocol_errors": counters.protocol_errors,
        "storage_errors": counters.storage_errors,
    }
