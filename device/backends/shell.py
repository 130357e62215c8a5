"""The asyncio shell around a ``HardwareBridge``: a backend's events in, the camera's outputs out.

``device.daemon.Daemon`` runs one for its backend, in its ``TaskGroup``:

- ``receive`` (a task) hands each backend event to the bridge at the camera's present (or, for
  an input the backend held back, at when it would have arrived), first letting the daemon play
  the camera's world up to the input's time (``advance``), then wakes the camera loop;
- ``horizon(now)`` is how far the camera loop may play the camera's world: ``now``, except while
  the backend holds inputs back after a loss, or has inputs that wait to be taken (after a host
  stall, decoded before this shell ran: ``HardwareBackend.hold_lag_s``), when it stops where
  such an input may still belong, so that no deadline is judged before the input up to it is
  known and the input is placed at its own time;
- ``show`` (called after each step of the camera loop) queues what the bridge says the hardware
  should show; ``send`` (a task) sends the queue in order; ``flush`` lets it finish at shutdown.

Both tasks are supervisors: an input or output that raises is logged and counted (``errors``) and
the next one is handled; a backend whose ``events()`` raises is logged and counted (``failed``),
and the camera carries on without hardware. ``telemetry_counters`` gives the backend's link
counters (prefixed with its name) and the bridge's and shell's (prefixed ``hardware``).

``check_real_time`` refuses a speed-up with real hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from device.backends.base import HardwareBackend
from device.backends.bridge import HardwareBridge
from device.backends.events import Output
from device.errors import ConfigError
from device.indications import Indication

log = logging.getLogger(__name__)


def check_real_time(backend_name: str, speed: float) -> None:
    """Raise ``ConfigError`` unless ``speed`` suits ``backend_name``: only ``sim`` runs faster.

    Real hardware (a bench microcontroller, a person at the buttons) lives in real time: played
    N times faster, a 3 s hold would have to last 3/N s.
    """
    if backend_name != "sim" and speed != 1.0:
        raise ConfigError(
            f"the {backend_name} hardware backend runs in real time: speed must be 1, got {speed}"
            " (only the sim backend plays faster)"
        )


class HardwareShell:
    """Runs ``bridge`` against ``backend`` for one camera loop (see the module docstring).

    ``now()`` is the camera's clock; ``floor()`` how far the loop has played the camera's world;
    ``advance(t)`` plays it to ``t``; ``wake()`` wakes the loop.
    """

    def __init__(
        self,
        backend: HardwareBackend,
        bridge: HardwareBridge,
        *,
        now: Callable[[], float],
        floor: Callable[[], float],
        advance: Callable[[float], None],
        wake: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.bridge = bridge
        self._now = now
        self._floor = floor
        self._advance = advance
        self._wake = wake
        self._outputs: asyncio.Queue[Output] = asyncio.Queue()
        self.counters = {"errors": 0, "failed": 0}

    async def receive(self) -> None:
        """Apply the backend's events until they end (after ``close``) or the backend breaks."""
        try:
            async for event, age_s in self.backend.timed_events():
                try:
                    self.bridge.apply(
                        event, self._now() - age_s, floor=self._floor(), advance=self._advance
                    )
                except Exception:  # a supervisor: one odd input must not stop the camera
                    self.counters["errors"] += 1
                    log.exception("hardware input %r could not be handled", event)
                self._wake()
        except Exception:  # the backend broke: the camera keeps running without hardware
            self.counters["failed"] += 1
            log.exception("hardware backend %s failed; the camera goes on without it", self.name)

    def horizon(self, now: float) -> float:
        """How far the camera's world may be played at camera time ``now`` (see the module
        docstring): never before ``floor()``, where it already is."""
        lag = self.backend.hold_lag_s()
        if lag is None:
            return now
        return max(self._floor(), now - lag)

    def show(self, indications: Iterable[Indication]) -> None:
        """Queue the outputs for ``indications`` and any change of the status LED or display."""
        for output in self.bridge.outputs(indications):
            self._outputs.put_nowait(output)

    async def send(self) -> None:
        """Send the queued outputs in order (the backend keeps them across link losses)."""
        while True:
            output = await self._outputs.get()
            try:
                await self.backend.output(output)
            except Exception:  # a supervisor: a refused output must not stop the camera
                self.counters["errors"] += 1
                log.exception("hardware output %r could not be sent", output)
            finally:
                self._outputs.task_done()

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until ``send`` has sent everything queued."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._outputs.join()

    @property
    def name(self) -> str:
        """The backend's registry name."""
        return self.backend.name

    def telemetry_counters(self) -> list[tuple[str, Mapping[str, int]]]:
        """``(prefix, counters)`` groups for ``device.telemetry.merge_counters``."""
        return [
            (self.name, self.backend.counters()),
            ("hardware", {**self.bridge.counters, **self.counters}),
        ]
