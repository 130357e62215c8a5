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
to play its world past the loss meanwhile.
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
from device.backends.events import BackendEvent, LinkDownEvent, LinkUpEvent, Output
from device.backends.serial_convert import (
    HOST_CAPABILITIES,
    INPUT_MESSAGES,
    LINK_COUNTERS,
    OWN_COUNTERS,
    McuClock,
    OutputMessage,
    StateKey,
    capability_names,
    check_options,
    input_event,
    link_counts,
    output_message,
    state_key,
)
from device.backends.serial_delivery import (
    Delivery,
    EventQueue,
    HoldConfig,
    InputHold,
    loss_marks,
)
from device.errors import HardwareError
from device.serialport import ByteLink, PortGone, open_byte_link
from protocol.errors import LocalProtocolError
from protocol.serial import (
    Connected,
    DeliveryFailed,
    Hello,
    LinkConfig,
    LinkEvent,
    LinkLost,
    LinkState,
    MessageReceived,
    MessageRejected,
    PeerRebooted,
    Role,
    SerialLink,
    VersionMismatch,
)

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
        self._state: dict[StateKey, OutputMessage] = {}
        self._dirty: set[StateKey] = set()
        self._mcu_clock = McuClock()
        self._link: SerialLink | None = None
        self._sessions = 0
        self._peer_boot: int | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._up = False
        self._ever_up = False
        self._tx_ready = asyncio.Event()
        self._timers_changed = asyncio.Event()
        self._first_up: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    # -- HardwareBackend ----------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the MCU announced in its last Hello (empty before the first handshake)."""
        return self._capabilities

    async def open(self) -> None:
        """Open the port and wait for the handshake; raise ``HardwareError`` saying why not."""
        if self._runner is not None or self._closed:
            raise HardwareError(f"serial backend on {self._url} was already opened")
        port = await open_byte_link(self._url, baudrate=self._baudrate)
        first_up = self._first_up = asyncio.get_running_loop().create_future()
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
        self._end_hold()
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
                self._hold.taken()  # the consumer has everything released: the world may go on

    def hold_lag_s(self) -> float | None:
        """While inputs are held after a loss, or released but not yet taken: how far back the
        camera's world must stay (``InputHold.horizon``). None otherwise."""
        horizon = self._hold.horizon(self._clock())
        return None if horizon is None else max(0.0, self._clock() - horizon)

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
        key = state_key(message)
        if key is not None:
            self._state[key] = message
        link = self._link
        if link is not None and link.state is LinkState.CONNECTED:
            self._send(link, message, key)
        elif key is None:
            self._count("outputs_dropped")  # a beep or buzz is moot by the time the link is back

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
            self._port_gone(reason)
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
            self._handle(link, link.close())  # in-flight outputs fail; their states are kept
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
                self._receive(link, data, self._clock())
                self._flush_dirty(link)
            self._wake()

    def _receive(self, link: SerialLink, data: bytes, now: float) -> None:
        # A hold that is over ends before these bytes: what they carry comes after its inputs.
        self._release(self._hold.handle_timeout(now))
        marks = loss_marks(link.counters)
        events = link.receive_data(data, now)
        if loss_marks(link.counters) != marks:
            self._hold.lost(now)  # before the events: the inputs that came with the loss wait
        self._handle(link, events)

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
                now = self._clock()
                self._release(self._hold.handle_timeout(now))
                if (due := link.next_deadline()) is not None and due <= now:
                    self._handle(link, link.handle_timeout(now))
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

    # -- link events ----------------------------------------------------------------------------

    def _handle(self, link: SerialLink, events: list[LinkEvent]) -> None:
        for event in events:
            match event:
                case MessageReceived(message=message) if isinstance(message, INPUT_MESSAGES):
                    received = input_event(message, self._mcu_clock.seconds(message.t_ms))
                    if (delivery := self._hold.put(received, self._clock())) is not None:
                        self._queue.put(delivery)
                case Connected(peer=peer):
                    self._on_connected(link, peer)
                case PeerRebooted():
                    self._link_down("the bench MCU restarted")
                case LinkLost(reason=reason):
                    self._link_down(f"serial link lost: {reason}")
                case DeliveryFailed(message=message, reason=reason):
                    self._count("delivery_failed")
                    # While down it is expected, and the state is re-sent on the way back up.
                    level = logging.WARNING if self._up else logging.DEBUG
                    log.log(level, "bench MCU did not take %r: %s", message, reason)
                case VersionMismatch():
                    self._on_version_mismatch(event)
                case MessageRejected(reason=reason):
                    log.debug("serial backend: refused a frame from the MCU: %s", reason)

    def _on_connected(self, link: SerialLink, peer: Hello) -> None:
        self._end_hold()  # the previous connection's inputs come first
        rebooted = self._peer_boot is not None and peer.boot_id != self._peer_boot
        if peer.boot_id != self._peer_boot:
            self._mcu_clock.restart()
        self._peer_boot = peer.boot_id
        self._capabilities = capability_names(peer.capabilities)
        if self._ever_up:
            self._count("reconnects")
        self._up = self._ever_up = True
        firmware = peer.firmware or "MCU"
        description = f"{self._url}: {firmware} (boot {peer.boot_id:08x})"
        log.info("serial link up: %s%s", description, ", rebooted" if rebooted else "")
        self._queue.put(Delivery(LinkUpEvent(description, self._capabilities, rebooted)))
        # The MCU may have rebooted or missed outputs while the link was down: send it all.
        for key, message in self._state.items():
            self._send(link, message, key)
        if self._first_up is not None and not self._first_up.done():
            self._first_up.set_result(None)

    def _link_down(self, reason: str) -> None:
        self._end_hold()  # the inputs of the link that went away come first
        if not self._up:
            return
        self._up = False
        self._count("link_losses")
        log.warning("serial link down (%s): %s", self._url, reason)
        self._queue.put(Delivery(LinkDownEvent(reason)))

    def _release(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._queue.put(delivery)

    def _end_hold(self) -> None:
        """Deliver the inputs held after a loss now, in order."""
        self._release(self._hold.release(self._clock()))

    def _port_gone(self, reason: str) -> None:
        self._count("port_losses")
        self._link_down(reason)
        self._fail_open(f"serial port {self._url} went away during the handshake: {reason}")

    def _on_version_mismatch(self, event: VersionMismatch) -> None:
        message = f"{event.description} (serial port {self._url})"
        if not self._fail_open(message):
            log.error("%s", message)

    def _fail_open(self, message: str) -> bool:
        """Make a pending ``open`` raise ``message``; False when ``open`` is not waiting."""
        if self._first_up is None or self._first_up.done():
            return False
        self._first_up.set_exception(HardwareError(message))
        return True

    # -- outputs --------------------------------------------------------------------------------

    def _send(self, link: SerialLink, message: OutputMessage, key: StateKey | None) -> None:
        try:
            link.send(message, self._clock(), reliable=True)
        except LocalProtocolError as error:
            # max_in_flight frames await acks: a state is sent later, a beep or buzz is moot.
            if key is not None:
                self._dirty.add(key)
                self._count("outputs_deferred")
            else:
                self._count("outputs_dropped")
                log.warning("serial backend: dropped %r: %s", message, error)
            return
        if key is not None:
            self._dirty.discard(key)
        self._wake()

    def _flush_dirty(self, link: SerialLink) -> None:
        """Send the states deferred while ``max_in_flight`` frames awaited acks."""
        for key in list(self._dirty):
            if link.state is not LinkState.CONNECTED or link.in_flight >= link.config.max_in_flight:
                return
            self._send(link, self._state[key], key)

    def _count(self, name: str) -> None:
        self._own[name] += 1
