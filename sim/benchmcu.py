"""The fake bench microcontroller, and the asyncio shell that runs a ``SerialLink`` over a port.

``LinkShell`` is the aioquic-style shell around the sans-IO ``protocol.serial.SerialLink``: one
task reads the port and feeds ``receive_data``, one arms a single timer from ``next_deadline``,
one writes whatever the link queues. Link events go to a queue (``events()``). The host side of
the bench console and ``FakeMcu`` are the same shell with a different role.

``FakeMcu`` is the protocol's own MCU side reversed into a device: buttons, holster, vehicle and
TASER inputs stamped with ``t_ms`` (milliseconds since ``epoch``), sent reliably, held while the
link is down and sent once it connects. It can add line noise to what it writes, to exercise the
host's resynchronisation. ``FdPort`` and ``open_pty`` give it a pty to stand on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import termios
import time
import tty
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Final, Protocol

from device.errors import HardwareError
from protocol.errors import LocalProtocolError
from protocol.serial import (
    Button,
    ButtonEdge,
    Capability,
    Connected,
    LinkConfig,
    LinkEvent,
    LinkState,
    Role,
    SerialLink,
    SerialMessage,
)
from sim.benchmcu_script import GestureName, gesture_edges, line_message

Clock = Callable[[], float]
BytesTap = Callable[[str, bytes, float], None]  # ("rx" or "tx", the bytes, the clock time)

MCU_CAPABILITIES: Final = (
    Capability.BUTTONS
    | Capability.HOLSTER
    | Capability.VEHICLE
    | Capability.TASER
    | Capability.BATTERY
    | Capability.LEDS
    | Capability.HAPTIC
    | Capability.TONE
    | Capability.DISPLAY
)
MCU_FIRMWARE: Final = "bwc-sim fake-mcu 1"
BACKLOG: Final = 64
"""Inputs held while the link is down; the oldest are dropped beyond it (a small MCU's queue)."""


class BytePort(Protocol):
    """What a shell needs of a port: ``device.serialport.ByteLink`` and ``FdPort`` both fit."""

    async def read(self) -> bytes:
        """The next bytes (at least one); raises ``HardwareError`` when the port is gone."""

    async def write(self, data: bytes) -> None:
        """Write all of ``data``."""


class FdPort:
    """A file descriptor (a pty end, a tty) as a non-blocking async ``BytePort``.

    ``on_stall`` is called when a write could not proceed for ``stall_s``: nobody is reading the
    other end. The pty master uses it to discard the stale bytes, as a UART loses what nobody
    listens to, instead of blocking the link forever.
    """

    def __init__(
        self, fd: int, *, on_stall: Callable[[], None] | None = None, stall_s: float = 0.5
    ) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._on_stall = on_stall
        self._stall_s = stall_s

    async def read(self) -> bytes:
        """Bytes read from the fd; ``HardwareError`` on end of file or an I/O error."""
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                await self._ready(writing=False)
                continue
            except OSError as exc:
                raise HardwareError(f"port read failed: {exc.strerror or exc}") from exc
            if not data:
                raise HardwareError("port closed (end of file)")
            return data

    async def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting (and on a stall, calling ``on_stall``) as needed."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                try:
                    async with asyncio.timeout(self._stall_s):
                        await self._ready(writing=True)
                except TimeoutError:
                    if self._on_stall is None:
                        raise HardwareError("port write stalled: nobody reads it") from None
                    self._on_stall()
            except OSError as exc:
                raise HardwareError(f"port write failed: {exc.strerror or exc}") from exc

    async def _ready(self, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        (loop.add_writer if writing else loop.add_reader)(self.fd, wake)
        try:
            await ready
        finally:
            (loop.remove_writer if writing else loop.remove_reader)(self.fd)


def open_pty() -> tuple[int, int, str]:
    """A new pty: ``(master_fd, slave_fd, slave_path)``, the slave in raw mode.

    The caller keeps ``slave_fd`` open, so the master never sees a hang-up while no host has the
    slave open, and the raw settings hold until a host sets its own.
    """
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing, no CR/LF translation: bytes pass unchanged
    return master, slave, os.ttyname(slave)


def pty_port(master: int, slave: int, *, stall_s: float = 0.5) -> FdPort:
    """The pty master as a port that drops unread bytes when nobody reads the slave."""

    def discard_unread() -> None:
        with contextlib.suppress(OSError):
            termios.tcflush(slave, termios.TCIFLUSH)

    return FdPort(master, on_stall=discard_unread, stall_s=stall_s)


class LinkShell:
    """Runs one ``SerialLink`` over a ``BytePort`` until the port goes away or it is cancelled.

    ``transform`` rewrites outgoing bytes just before they are written (line noise); ``tap`` sees
    every chunk read and written. ``on_event`` is called synchronously for each link event before
    it is queued, so an owner can react (resend state, send a backlog) at once.
    """

    def __init__(
        self,
        link: SerialLink,
        port: BytePort,
        *,
        clock: Clock = time.monotonic,
        transform: Callable[[bytes], bytes] | None = None,
        tap: BytesTap | None = None,
        on_event: Callable[[LinkEvent], None] | None = None,
    ) -> None:
        self.link = link
        self.port = port
        self.clock = clock
        self.connected = asyncio.Event()
        """Set while the link is CONNECTED."""
        self._transform = transform
        self._tap = tap
        self._on_event = on_event
        self._events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._dirty = asyncio.Event()
        self._wake = asyncio.Event()
        self._flush_waiters: list[asyncio.Future[float]] = []

    async def run(self) -> None:
        """Connect and serve; raises ``HardwareError`` when the port fails."""
        self.link.connect(self.clock())
        self._dirty.set()
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_loop())
                timers = group.create_task(self._timer_loop())
                try:
                    await self._read_loop()
                finally:
                    writer.cancel()
                    timers.cancel()
        except* HardwareError as failed:
            raise failed.exceptions[0] from None

    def send(self, message: SerialMessage, *, reliable: bool | None = None) -> int:
        """Queue ``message`` on the link (``SerialLink.send``) and wake the writer; its seq."""
        seq = self.link.send(message, self.clock(), reliable=reliable)
        self._dirty.set()
        self._wake.set()  # a new ack timer may be the earliest deadline now
        return seq

    async def flushed(self) -> float:
        """Wait until everything queued so far is written; the clock time just after."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(waiter)
        self._dirty.set()
        return await waiter

    async def next_event(self) -> LinkEvent:
        """The next link event (``Connected``, ``MessageReceived``, ``LinkLost``...)."""
        return await self._events.get()

    async def events(self) -> AsyncIterator[LinkEvent]:
        """Every link event, in order, for as long as the caller iterates."""
        while True:
            yield await self._events.get()

    def _dispatch(self, events: list[LinkEvent]) -> None:
        if self.link.state is LinkState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        for event in events:
            if self._on_event is not None:
                self._on_event(event)
            self._events.put_nowait(event)
        self._dirty.set()
        self._wake.set()

    async def _read_loop(self) -> None:
        while True:
            data = await self.port.read()
            now = self.clock()
            if self._tap is not None:
                self._tap("rx", data, now)
            self._dispatch(self.link.receive_data(data, now))

    async def _timer_loop(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.link.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if deadline is not None and self.clock() >= deadline:
                # Let a read that is already due run first: our own lateness is not the peer's
                # silence (docs/protocol.md, "Heartbeats and link loss").
                await asyncio.sleep(0)
                self._dispatch(self.link.handle_timeout(self.clock()))

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            data = self.link.data_to_send()
            waiters, self._flush_waiters = self._flush_waiters, []
            if data and self._transform is not None:
                data = self._transform(data)
            if data:
                await self.port.write(data)
            now = self.clock()
            if data and self._tap is not None:
                self._tap("tx", data, now)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(now)


class FakeMcu:
    """A bench microcontroller: ``SerialLink(role=MCU)`` plus inputs, over any ``BytePort``.

    ``noise`` is the fraction of written bytes before which a random garbage byte is inserted
    (drawn from ``rng``), inside and between frames alike. ``epoch`` is the clock time at which
    ``t_ms`` is 0 (default: now, i.e. "MCU boot").
    """

    def __init__(
        self,
        port: BytePort,
        *,
        boot_id: int,
        clock: Clock = time.monotonic,
        epoch: float | None = None,
        noise: float = 0.0,
        rng: random.Random | None = None,
        config: LinkConfig | None = None,
        tap: BytesTap | None = None,
    ) -> None:
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be a fraction from 0 to below 1, got {noise}")
        self.rng = rng if rng is not None else random.Random()
        self.noise = noise
        self.epoch = clock() if epoch is None else epoch
        self.link = SerialLink(Role.MCU, MCU_CAPABILITIES, boot_id, MCU_FIRMWARE, config)
        self.shell = LinkShell(
            self.link,
            port,
            clock=clock,
            transform=self._noisy if noise else None,
            tap=tap,
            on_event=self._on_event,
        )
        self.connected = self.shell.connected
        """Set while a host is connected."""
        self.backlog: deque[SerialMessage] = deque(maxlen=BACKLOG)
        """Inputs waiting for the link to connect, oldest first."""
        self.noise_bytes = 0
        """Garbage bytes inserted so far."""
        self.on_input: Callable[[SerialMessage, int | None], None] | None = None
        """Called with each input and its seq as it is sent (None: held in the backlog)."""

    async def run(self) -> None:
        """Serve the link until cancelled; raises ``HardwareError`` if the port fails."""
        await self.shell.run()

    def t_ms(self) -> int:
        """The MCU's millisecond counter: ms since ``epoch``, as a wrapping u32."""
        return int((self.shell.clock() - self.epoch) * 1000) & 0xFFFF_FFFF

    def stamp(self, message: SerialMessage) -> SerialMessage:
        """``message`` (an input) with ``t_ms`` set to now; ``TypeError`` for an output."""
        if not hasattr(message, "t_ms"):
            raise TypeError(f"{type(message).__name__} is not an input: it has no t_ms")
        stamp = {"t_ms": self.t_ms()}  # a dict: the check above stands in for a static type
        return replace(message, **stamp)

    def send_input(self, message: SerialMessage) -> int | None:
        """Send an input reliably; its seq, or None if held until a host connects."""
        seq = None
        if self.connected.is_set():
            seq = self.shell.send(message, reliable=True)
        else:
            self.backlog.append(message)
        if self.on_input is not None:
            self.on_input(message, seq)
        return seq

    async def write_input(self, message: SerialMessage) -> float:
        """Send an input and wait until its frame is written; the clock time just after.

        For latency measurements (the host's reaction is timed from this instant), so the link
        must be connected: ``LocalProtocolError`` otherwise, rather than a backlog's delay.
        """
        if not self.connected.is_set():
            raise LocalProtocolError("write_input needs a connected host: await connected first")
        self.send_input(message)
        return await self.shell.flushed()

    def button(self, button: Button, *, pressed: bool) -> ButtonEdge:
        """A debounced button edge detected now, sent; the message as sent."""
        edge = ButtonEdge(self.t_ms(), button, pressed)
        self.send_input(edge)
        return edge

    def line(self, name: str, *, level: bool) -> SerialMessage:
        """Input line ``name`` (holster, lightbar, siren, door, taser_armed) changed now; sent."""
        message = self.stamp(line_message(name, level))
        self.send_input(message)
        return message

    async def gesture(
        self, gesture: GestureName, button: Button = Button.EVENT, *, hold_s: float | None = None
    ) -> list[ButtonEdge]:
        """Play a press, double press or hold with human timing; the edges sent, in order."""
        start = self.shell.clock()
        sent = []
        for offset, pressed in gesture_edges(gesture, self.rng, hold_s):
            await asyncio.sleep(max(0.0, start + offset - self.shell.clock()))
            sent.append(self.button(button, pressed=pressed))
        return sent

    def events(self) -> AsyncIterator[LinkEvent]:
        """Every link event: connections, losses, and the outputs received from the host."""
        return self.shell.events()

    def _on_event(self, event: LinkEvent) -> None:
        if isinstance(event, Connected):
            while self.backlog:
                message = self.backlog.popleft()
                seq = self.shell.send(message, reliable=True)
                if self.on_input is not None:
                    self.on_input(message, seq)

    def _noisy(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.rng.random() < self.noise:
                out.append(self.rng.randrange(256))
                self.noise_bytes += 1
            out.append(byte)
        return bytes(out)
