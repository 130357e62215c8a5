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
        """Inputs and link changes, in the order they arrived."""

    @abstractmethod
    async def output(self, output: Output) -> None:
        """Show, sound or vibrate ``output`` (kept and re-sent after a reconnect)."""

    def counters(self) -> Mapping[str, int]:
        """Link counters for telemetry (frames, CRC errors, resyncs, retries); none by default."""
        return {}
