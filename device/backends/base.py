"""The hardware backend interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

from device.backends.events import BackendEvent, Output


class HardwareBackend(ABC):
    """Buttons, switches and sensors in; LEDs, haptics, tones and display text out.

    Lifecycle: ``await open()`` once (raises ``device.errors.HardwareError`` with a message a user
    can act on: a missing port, no permission, a peer speaking another protocol version), then
    iterate ``events()`` until ``close()``. A backend whose hardware goes away and comes back
    (a USB unplug, a rebooted microcontroller) reports ``LinkDownEvent`` / ``LinkUpEvent`` and
    reconnects by itself; ``events()`` ends only after ``close()``.

    ``output`` never blocks for long and never raises for a link that is down: the backend keeps
    the latest state of each output and sends it when the hardware is back.
    """

    name: ClassVar[str]
    """The registry name (``sim``, ``serial``)."""

    @property
    @abstractmethod
    def capabilities(self) -> frozenset[str]:
        """What the hardware has (names from ``device.backends.events.CAPABILITIES``)."""

    @abstractmethod
    async def open(self) -> None:
        """Open the hardware; returns once it is usable (or raises ``HardwareError``)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the hardware; ``events()`` ends. Safe to call twice."""

    @abstractmethod
    def events(self) -> AsyncIterator[BackendEvent]:
        """Inputs and link changes, in the order they arrived (or, for inputs held back after a
        loss, in the hardware's time order: see ``timed_events``)."""

    @abstractmethod
    async def output(self, output: Output) -> None:
        """Show, sound or vibrate ``output`` (kept and re-sent after a reconnect)."""

    async def timed_events(self) -> AsyncIterator[tuple[BackendEvent, float]]:
        """``events()``, each with how long ago (seconds, >= 0) the camera should take it to
        have arrived: 0 (the default) for an event delivered as it arrived. A backend that held
        inputs back to deliver them in order says when each would have arrived."""
        async for event in self.events():
            yield event, 0.0

    def hold_lag_s(self) -> float | None:
        """While the backend holds inputs back to deliver them in order (a serial frame was lost
        and will be resent), or has inputs that arrived but wait for ``events()``' consumer, how
        far before the present one may still belong (``math.inf``: anywhere the camera has not
        yet played): the camera must not play its world past that. None (the default): nothing
        is held."""
        return None

    def counters(self) -> Mapping[str, int]:
        """Link counters for telemetry (frames, CRC errors, resyncs, retries); none by default."""
        return {}
