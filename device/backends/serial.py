"""``SerialBackend``: the camera's hardware on a bench microcontroller over the serial link.

The asyncio shell around the sans-IO ``protocol.serial.SerialLink`` (host role). One runner task,
created by ``open`` and cancelled by ``close``, runs port sessions; each session runs a reader, a
timer and a writer task in a ``TaskGroup``. When the port vanishes (a USB unplug) the backend
reports ``LinkDownEvent`` and reopens the same URL every ``reconnect_interval_s`` (a by-id symlink
may come back pointing at another tty), handshakes, reports ``LinkUpEvent`` and re-sends the
latest state of every LED and the display. A heartbeat loss with the port still there is left to
``SerialLink``, which handshakes again by itself: reopening would toggle DTR and reset
Arduino-style boards.

Inputs are delivered as they arrive, except after a loss: when the link's decoder drops bytes
(a corrupted frame, to be resent 0.25 s later), the inputs that arrive next are held and released
together in ``t_ms`` order (``serial_delivery.InputHold``), and ``hold_lag_s`` tells the camera not
to play its world past the loss meanwhile, nor past inputs that arrived but wait for the consumer.

The modules: this one runs the port sessions and their tasks; ``serial_events`` turns the link's
events into backend events; ``serial_outputs`` sends and keeps the outputs; ``serial_delivery``
holds and queues inputs; ``serial_convert`` maps messages to events and outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import ClassVar

from device.backends.base import HardwareBackend
from device.backends.events import BackendEvent, Output
from device.backends.serial_convert import (
    HOST_CAPABILITIES,
    LINK_COUNTERS,
    OWN_COUNTERS,
    check_options,
    link_counts,
    output_message,
)
from device.backends.serial_delivery import EventQueue, HoldConfig, InputHold
from device.backends.serial_events import LinkEvents
from device.backends.serial_outputs import OutputKeeper
from device.errors import HardwareError
from device.serialport import ByteLink, PortGone, open_byte_link
from protocol.errors import LocalProtocolError
from protocol.serial import LinkConfig, Role, SerialLink

log = logging.getLogger(__name__)


class SerialBackend(HardwareBackend):
    """Buttons, switches, sensors, LEDs, haptics, buzzer and display on a bench MCU.

    ``port`` is any pyserial URL (``/dev/ttyACM0``, ``/dev/serial/by-id/...``,
    ``socket://host:port``, ``rfc2217://host:port``). ``open`` waits up to
    ``handshake_timeout_s`` for the MCU's handshake. ``clock`` is the monotonic clock the link's
    timers run on; ``boot_id`` (random by default) is the host's first link boot ID. ``hold``
    says how long inputs are held after a loss (default: ``HoldConfig.for_link(config)``).
    """

    name: ClassVar[str] = "serial"

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        config: LinkConfig | None = None,
        reconnect_interval_s: float = 0.5,
        boot_id: int | None = None,
        firmware: str = "bwc-sim host",
        clock: Callable[[], float] = time.monotonic,
        handshake_timeout_s: float = 5.0,
        max_queued_events: int = 1024,
        hold: HoldConfig | None = None,
    ) -> None:
        self._boot_id = boot_id if boot_id is not None else secrets.randbelow(0xFFFF_FFFF) + 1
        check_options(
            port,
            self._boot_id,
            firmware,
            baudrate=baudrate,
            reconnect_interval_s=reconnect_interval_s,
            handshake_timeout_s=handshake_timeout_s,
            max_queued_events=max_queued_events,
        )
        self._url = port
        self._baudrate = baudrate
        self._config = config if config is not None else LinkConfig()
        self._reconnect_interval_s = reconnect_interval_s
        self._handshake_timeout_s = handshake_timeout_s
        self._firmware = firmware
        self._clock = clock
        self._own: Counter[str] = Counter(dict.fromkeys(OWN_COUNTERS, 0))
        self._retired: Counter[str] = Counter(dict.fromkeys(LINK_COUNTERS.values(), 0))
        self._queue = EventQueue(max_queued_events, lambda _: self._count("events_dropped"))
        self._hold = InputHold(hold if hold is not None else HoldConfig.for_link(self._config))
        self._outputs = OutputKeeper(clock=clock, count=self._count, wake=self._wake)
        self._inbound = LinkEvents(
            port,
            queue=self._queue,
            hold=self._hold,
            outputs=self._outputs,
            clock=clock,
            count=self._count,
        )
        self._link: SerialLink | None = None
        self._sessions = 0
        self._tx_ready = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # -- HardwareBackend ----------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the MCU announced in its last Hello (empty before the first handshake)."""
        return self._inbound.capabilities

    async def open(self) -> None:
        """Open the port and wait for the handshake; raise ``HardwareError`` saying why not."""
        if self._runner is not None or self._closed:
            raise HardwareError(f"serial backend on {self._url} was already opened")
        port = await open_byte_link(self._url, baudrate=self._baudrate)
        first_up = self._inbound.first_up = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(port), name=f"serial backend {self._url}")
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                await first_up
        except TimeoutError:
            await self.close()
            raise HardwareError(
                f"no handshake from the bench MCU on {self._url} within "
                f"{self._handshake_timeout_s:g} s: is its firmware running, at {self._baudrate} "
                f"baud, and speaking the serial bench-link protocol?"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the link and release the port; ``events()`` ends. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            # wait, not await: the runner's CancelledError is not ours to raise.
            await asyncio.wait([runner])
            if not runner.cancelled() and runner.exception() is not None:
                log.error("serial backend runner failed", exc_info=runner.exception())
        self._inbound.end_hold()
        self._queue.finish()

    async def events(self) -> AsyncIterator[BackendEvent]:
        """Inputs and link changes in arrival order, but inputs held after a loss come in
        ``t_ms`` order; ends after ``close()``."""
        async for event, _ in self.timed_events():
            yield event

    async def timed_events(self) -> AsyncIterator[tuple[BackendEvent, float]]:
        """``events()``; a held input with how long ago it would have arrived had no frame been
        lost (its ``t_ms`` plus the smallest transit among those held with it); others 0."""
        while (delivery := await self._queue.get()) is not None:
            arrived = delivery.arrived
            yield delivery.event, 0.0 if arrived is None else max(0.0, self._clock() - arrived)
            if not self._queue:
                self._inbound.taken()  # the consumer has everything: the world may go on

    def hold_lag_s(self) -> float | None:
        """While inputs are held after a loss, or wait in the queue for the consumer: how far
        back the camera's world must stay (``LinkEvents.horizon_lag_s``). None otherwise."""
        return self._inbound.horizon_lag_s()

    async def output(self, output: Output) -> None:
        """Send ``output`` reliably if connected; LED and display states are also kept to resend.

        Tones and vibrations asked for while the link is down are dropped (``outputs_dropped``).

        Raises ``HardwareError`` only for a value the link cannot carry (an LED index over 255,
        a tone outside 20-20000 Hz, text over 64 UTF-8 bytes).
        """
        try:
            message = output_message(output)
        except LocalProtocolError as error:
            raise HardwareError(f"cannot send {output!r} to the bench MCU: {error}") from error
        self._outputs.output(message, self._link)

    def counters(self) -> Mapping[str, int]:
        """Frames, CRC errors, resyncs, retries, link losses, reconnects, drops, holds."""
        totals = Counter(self._retired)
        if self._link is not None:
            totals.update(link_counts(self._link))
        return {**self._own, **totals, **self._hold.counters}

    # -- sessions -----------------------------------------------------------------------------

    async def _run(self, port: ByteLink) -> None:
        while True:
            try:
                reason = await self._session(port)
            except Exception as error:  # supervisor: log, count, and start a new session
                self._count("internal_errors")
                log.exception("serial backend: session on %s failed", self._url)
                reason = f"internal error: {error!r}"
            self._inbound.port_gone(reason)
            port = await self._reopen()

    async def _session(self, port: ByteLink) -> str:
        """Run one port session until the port goes away; return why it did.

        Each session is a new ``SerialLink`` with the next host boot ID: its seqs restart at 0,
        and the new boot makes the MCU clear its duplicate window (which would otherwise swallow
        our first frames as repeats of the last session's) and expect our outputs again.
        """
        boot_id = (self._boot_id - 1 + self._sessions) % 0xFFFF_FFFF + 1
        self._sessions += 1
        link = SerialLink(Role.HOST, HOST_CAPABILITIES, boot_id, self._firmware, self._config)
        self._link = link
        reason = "the serial port closed"
        try:
            link.connect(self._clock())
            self._wake()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop(port, link))
                group.create_task(self._timer_loop(link))
                group.create_task(self._write_loop(port, link))
        except* PortGone as gone:
            reason = str(gone.exceptions[0])
        finally:
            self._link = None
            self._retired.update(link_counts(link))
            self._inbound.handle(link, link.close())  # in-flight outputs fail; states are kept
            await port.close()
        return reason

    async def _reopen(self) -> ByteLink:
        attempts = 0
        while True:
            await asyncio.sleep(self._reconnect_interval_s)
            try:
                port = await open_byte_link(self._url, baudrate=self._baudrate)
            except HardwareError as error:
                self._count("reopen_failures")
                attempts += 1
                # Once at info, then quietly: an unplugged bench may stay unplugged for hours.
                level = logging.INFO if attempts == 1 else logging.DEBUG
                log.log(level, "serial port %s not back yet: %s", self._url, error)
                continue
            log.info("serial port %s is back; handshaking", self._url)
            return port

    # -- the three tasks of a session -----------------------------------------------------------

    async def _read_loop(self, port: ByteLink, link: SerialLink) -> None:
        while True:
            data = await port.read()
            with self._supervised("handling bytes from the MCU"):
                self._inbound.receive(link, data, self._clock())
                self._outputs.flush_deferred(link)
            self._wake()

    async def _timer_loop(self, link: SerialLink) -> None:
        while True:
            self._timers_changed.clear()
            deadlines = (link.next_deadline(), self._hold.next_deadline())
            deadline = min((d for d in deadlines if d is not None), default=None)
            delay = math.inf if deadline is None else deadline - self._clock()
            if delay > 0:
                # Woken early whenever a send or receive may have moved the deadline.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(delay) else delay):
                        await self._timers_changed.wait()
                continue
            # Let the reader take bytes already received first: our own lateness in getting
            # here must not be taken for the MCU's silence.
            await asyncio.sleep(0)
            with self._supervised("running the link timers"):
                self._inbound.timeout(link, self._clock())
            self._tx_ready.set()

    async def _write_loop(self, port: ByteLink, link: SerialLink) -> None:
        while True:
            await self._tx_ready.wait()
            self._tx_ready.clear()
            data = link.data_to_send()
            if data:
                await port.write(data)

    @contextlib.contextmanager
    def _supervised(self, doing: str) -> Iterator[None]:
        """Log and count a bug instead of ending the link: line noise must never crash us."""
        try:
            yield
        except Exception:
            self._count("internal_errors")
            log.exception("serial backend: error %s", doing)

    def _wake(self) -> None:
        self._tx_ready.set()
        self._timers_changed.set()

    def _count(self, name: str) -> None:
        self._own[name] += 1
