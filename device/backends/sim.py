"""The in-memory hardware backend: inputs injected by scenarios and tests, outputs kept in a list.

``SimBackend`` is a first-class backend, like python-can's virtual bus: the live simulator plays
a scenario's button, input-line and speed actions through it, so they take the same path to the
camera (``HardwareBridge``) as a bench microcontroller's frames do. Tests use it to inject
inputs, to pull the "cable" (``unplug`` / ``replug``) and to see what the camera showed.

While unplugged it behaves like hardware that is gone: injected inputs are dropped (counted
``dropped``), and outputs are not shown; the latest LED states and display text are kept and
shown again at ``replug``, as ``HardwareBackend.output`` promises (tones and vibrations of the
meantime are lost, as they would be).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import ClassVar, Final

from device.backends.base import HardwareBackend
from device.backends.events import (
    CAPABILITIES,
    BackendEvent,
    DisplayOutput,
    HardwareInput,
    LedOutput,
    LinkDownEvent,
    LinkUpEvent,
    Output,
)
from device.errors import ConfigError

DESCRIPTION: Final = "in-memory simulator"


class SimBackend(HardwareBackend):
    """In-memory hardware: ``inject`` inputs, read ``outputs``; see the module docstring."""

    name: ClassVar[str] = "sim"

    def __init__(self, *, capabilities: Iterable[str] | None = None) -> None:
        wanted = CAPABILITIES if capabilities is None else frozenset(capabilities)
        unknown = sorted(wanted - CAPABILITIES)
        if unknown:
            raise ConfigError(
                f"sim backend: unknown capabilities {unknown}; known: {sorted(CAPABILITIES)}"
            )
        self._capabilities = wanted
        self._events: asyncio.Queue[BackendEvent | None] = asyncio.Queue()
        self.outputs: list[Output] = []
        """Every output shown, oldest first (not those sent while unplugged)."""
        self.opened = False
        self.closed = False
        self.plugged = True
        self._leds: dict[int, LedOutput] = {}
        self._display: DisplayOutput | None = None
        self._changed = asyncio.Event()
        self._counters = dict.fromkeys(("inputs", "dropped", "outputs", "link_downs"), 0)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this simulated hardware has (all of ``CAPABILITIES`` unless told otherwise)."""
        return self._capabilities

    async def open(self) -> None:
        """Report the hardware present (a ``LinkUpEvent``)."""
        if self.opened:
            return
        self.opened = True
        self._events.put_nowait(LinkUpEvent(DESCRIPTION, self._capabilities))

    async def close(self) -> None:
        """End ``events()``; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[BackendEvent]:
        """Link events and injected inputs, in order, until ``close``."""
        while not self.closed or not self._events.empty():
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def output(self, output: Output) -> None:
        """Show ``output`` (keep its state for ``replug`` while unplugged)."""
        if isinstance(output, LedOutput):
            self._leds[output.led] = output
        elif isinstance(output, DisplayOutput):
            self._display = output
        if self.plugged:
            self._show(output)

    def counters(self) -> Mapping[str, int]:
        """``inputs`` injected, ``dropped`` while unplugged, ``outputs`` shown, ``link_downs``."""
        return dict(self._counters)

    # -- the test and scenario side -------------------------------------------------------------

    def inject(self, event: HardwareInput) -> None:
        """An input from the simulated world (dropped while unplugged or closed)."""
        if not self.plugged or self.closed:
            self._counters["dropped"] += 1
            return
        self._counters["inputs"] += 1
        self._events.put_nowait(event)

    def unplug(self, reason: str = "unplugged") -> None:
        """The hardware goes away: a ``LinkDownEvent``; inputs are dropped until ``replug``."""
        if self.plugged and not self.closed:
            self.plugged = False
            self._counters["link_downs"] += 1
            self._events.put_nowait(LinkDownEvent(reason))

    def replug(self, *, rebooted: bool = False) -> None:
        """The hardware is back: a ``LinkUpEvent``; the kept LED and display states are shown."""
        if self.plugged or self.closed:
            return
        self.plugged = True
        self._events.put_nowait(LinkUpEvent(DESCRIPTION, self._capabilities, rebooted=rebooted))
        kept: list[Output] = [*self._leds.values()]
        if self._display is not None:
            kept.append(self._display)
        for output in kept:
            self._show(output)

    def latest_led(self, led: int) -> LedOutput | None:
        """The state LED ``led`` was last set to, or None."""
        return self._leds.get(led)

    def latest_display(self) -> str | None:
        """The text last sent to the display, or None."""
        return None if self._display is None else self._display.text

    async def wait_output(self, matches: Callable[[Output], bool]) -> Output:
        """The first output shown that ``matches`` (already shown, or when it is); no timeout.

        Callers bound it with ``asyncio.timeout``.
        """
        seen = 0
        while True:
            for output in self.outputs[seen:]:
                if matches(output):
                    return output
            seen = len(self.outputs)
            self._changed.clear()
            await self._changed.wait()

    def _show(self, output: Output) -> None:
        self.outputs.append(output)
        self._counters["outputs"] += 1
        self._changed.set()
