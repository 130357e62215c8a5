"""``SerialBackend`` against a fake bench MCU over a real pty.

The fake MCU is the project's own ``SerialLink(role=MCU)`` driven on the master side of a pty;
the backend opens the slave's path (or a symlink to it) like any serial port. Covered: the
handshake, inputs as backend events with unwrapped MCU times, outputs reaching the MCU, version
mismatch and handshake timeout, 1 % line noise with 300+ reliable edges delivered exactly once,
link loss, and unplug / replug through a symlink that comes back pointing at another tty.
Conversions and the MCU clock are property-tested without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import struct
import time
import tty
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.backends.events import (
    CAPABILITIES,
    BackendEvent,
    BatteryInput,
    ButtonInput,
    DisplayOutput,
    GpsInput,
    HapticOutput,
    ImuInput,
    LedOutput,
    LineInput,
    LinkDownEvent,
    LinkUpEvent,
    Output,
    SpeedInput,
    TaserInput,
    ToneOutput,
)
from device.backends.registry import backend_class, open_backend
from device.backends.serial import SerialBackend
from device.backends.serial_convert import (
    INPUT_MESSAGES,
    McuClock,
    capability_names,
    input_event,
    input_message,
    output_event,
    output_message,
)
from device.backends.serial_delivery import (
    TRANSITIONS,
    Delivery,
    EventQueue,
    HoldConfig,
    HoldInput,
    HoldState,
    InputHold,
    input_time,
)
from device.errors import ConfigError, HardwareError
from protocol.serial import (
    Battery,
    Button,
    ButtonEdge,
    Capability,
    DeliveryFailed,
    DisplayText,
    GpsFix,
    GpsFixType,
    Haptic,
    Hello,
    Holster,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    LinkConfig,
    LinkEvent,
    LinkState,
    MessageReceived,
    Role,
    SerialLink,
    SerialMessage,
    Taser,
    TaserEvent,
    Tone,
    VehicleInput,
    VehicleInputKind,
    cobs_encode,
    crc16,
)
from tests.serial_support import STRATEGIES

WAIT_S = 8.0
MCU_CAPS = Capability.BUTTONS | Capability.HOLSTER | Capability.IMU | Capability.LEDS
FAST = LinkConfig(heartbeat_interval_s=0.2, link_timeout_s=0.8, hello_interval_s=0.1)
"""Quick link loss and re-handshake, for the one test that waits for a loss. Other tests keep
the default 3 s link timeout, so a busy machine stalling the loop cannot fake a loss."""


class PtyMcu:
    """A bench MCU: ``SerialLink(role=MCU)`` on the master side of a raw pty."""

    def __init__(
        self, boot_id: int, config: LinkConfig | None = None, *, noise: float = 0.0, seed: int = 0
    ) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.config = config if config is not None else LinkConfig()
        self.link = SerialLink(Role.MCU, MCU_CAPS, boot_id, "fake-mcu 1.0", self.config)
        self.events: list[LinkEvent] = []
        self.noise = noise
        self.noise_bytes = 0
        self._rng = random.Random(seed)
        self._out = bytearray()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.paused = False

    @property
    def received(self) -> list[SerialMessage]:
        return [e.message for e in self.events if isinstance(e, MessageReceived)]

    async def run(self) -> None:
        """Connect and run the link's timers (the reader is a loop callback)."""
        self._loop.add_reader(self.master, self._on_readable)
        self.link.connect(time.monotonic())
        self._after([])
        while True:
            self._changed.clear()
            deadline = self.link.next_deadline()
            delay = 1.0 if deadline is None else deadline - time.monotonic()
            if delay > 0 or self.paused:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(delay, 0.01)):
                        await self._changed.wait()
                continue
            self._after(self.link.handle_timeout(time.monotonic()))

    def reboot(self, boot_id: int) -> None:
        """A reset (watchdog, reset button): a new boot on the same port, outputs forgotten."""
        self.link = SerialLink(Role.MCU, MCU_CAPS, boot_id, "fake-mcu 1.0", self.config)
        self.events = []
        self.link.connect(time.monotonic())
        self._after([])

    def pause(self) -> None:
        """Go silent (a hung MCU): stop reading, writing and running timers."""
        self.paused = True
        self._loop.remove_reader(self.master)

    def resume(self) -> None:
        self.paused = False
        self._loop.add_reader(self.master, self._on_readable)
        self._changed.set()

    def unplug(self) -> None:
        """The MCU vanishes: both ends of its pty close."""
        self._loop.remove_reader(self.master)
        self._loop.remove_writer(self.master)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def send(self, message: SerialMessage, window: int = 32) -> None:
        """Send ``message`` once connected and fewer than ``window`` frames await acks."""
        await self.wait_for(
            lambda: self.link.state is LinkState.CONNECTED and self.link.in_flight < window
        )
        self.link.send(message, time.monotonic())
        self._after([])

    async def send_corrupted(self, message: SerialMessage) -> None:
        """Send ``message`` with a byte of its first transmission changed: the host drops it
        (a CRC or COBS error) and the link resends it after ``ack_timeout_s``."""
        await self.wait_for(lambda: self.link.state is LinkState.CONNECTED)
        self.link.send(message, time.monotonic())
        data = bytearray(self.link.data_to_send())
        data[-2] = data[-2] % 0xFF + 1  # still not a delimiter, but another byte
        self.write_raw(bytes(data))
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def write_raw(self, data: bytes) -> None:
        self._out += data
        self._write_some()

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        self._after(self.link.receive_data(data, time.monotonic()))

    def _after(self, events: list[LinkEvent]) -> None:
        self.events += events
        data = self.link.data_to_send()
        if self.noise:
            data = self._noisy(data)
        self.write_raw(data)
        self._changed.set()

    def _noisy(self, data: bytes) -> bytes:
        # Garbage between and inside frames: a random byte (0x00 included) before 1 % of bytes.
        out = bytearray()
        for byte in data:
            if self._rng.random() < self.noise:
                out.append(self._rng.randrange(256))
                self.noise_bytes += 1
            out.append(byte)
        return bytes(out)

    def _write_some(self) -> None:
        if self.paused:
            return
        try:
            written = os.write(self.master, self._out) if self._out else 0
        except BlockingIOError:
            written = 0
        del self._out[:written]
        if self._out:
            self._loop.add_writer(self.master, self._write_some)
        else:
            self._loop.remove_writer(self.master)


class LogWaiter(logging.Handler):
    """Wakes a test when a log record containing ``text`` is emitted (no polling)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@dataclass
class EventLog:
    """Everything ``backend.events()`` yields, and a way to wait for what should come."""

    events: list[BackendEvent] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    """How long before its delivery each event is to be taken to have arrived."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect(self, backend: SerialBackend) -> None:
        async for event, age in backend.timed_events():
            self.events.append(event)
            self.ages.append(age)
            self._changed.set()

    def of(self, kind: type[BackendEvent]) -> list[BackendEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, condition: Callable[[Sequence[BackendEvent]], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition(self.events):
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(mcu: PtyMcu) -> AsyncIterator[PtyMcu]:
    async with asyncio.TaskGroup() as group:
        task = group.create_task(mcu.run())
        try:
            yield mcu
        finally:
            task.cancel()
            mcu.unplug()


@contextlib.asynccontextmanager
async def bench(
    config: LinkConfig | None = None,
    *,
    mcu_config: LinkConfig | None = None,
    hold: HoldConfig | None = None,
) -> AsyncIterator[tuple[PtyMcu, SerialBackend, EventLog]]:
    """A running fake MCU, a backend opened on its pty, and the backend's event log."""
    async with running(PtyMcu(0x2222, mcu_config)) as mcu:
        backend = SerialBackend(mcu.path, boot_id=0x1111, config=config, hold=hold)
        await backend.open()
        log = EventLog()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(log.collect(backend))
                try:
                    yield mcu, backend, log
                finally:
                    await backend.close()
        finally:
            await backend.close()


# -- handshake, inputs, outputs -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_handshake_then_inputs_arrive_as_events_with_mcu_times() -> None:
    async with bench() as (mcu, backend, log):
        assert backend.capabilities == {"buttons", "holster", "imu", "leds"}
        await log.wait_for(lambda events: len(events) >= 1)
        up = log.events[0]
        assert isinstance(up, LinkUpEvent)
        assert not up.rebooted
        assert "fake-mcu 1.0" in up.description
        assert mcu.path in up.description
        sample = ImuSample(ax=1000, ay=-500, az=0, gx=905, gy=-10, gz=0)
        for message in (
            ButtonEdge(1000, Button.EVENT, pressed=True),
            Holster(1100, drawn=True),
            VehicleInput(1200, VehicleInputKind.SPEED, 57),
            VehicleInput(1300, VehicleInputKind.LIGHTBAR, 1),
            Taser(1400, TaserEvent.ARMED),
            Taser(1500, TaserEvent.TRIGGER),
            Taser(1600, TaserEvent.ARC),
            Taser(1700, TaserEvent.SAFE),
            ImuBatch(1800, 10, (sample, sample)),
            GpsFix(1900, GpsFixType.FIX_3D, 515_000_000, -1_250_000, 5),
            Battery(2000, 81, 3950, charging=False),
        ):
            await mcu.send(message)
        await log.wait_for(lambda events: len(events) >= 12)
    assert log.events[1:] == [
        ButtonInput("event", pressed=True, hw_time_s=1.0),
        LineInput("holster", level=True, hw_time_s=1.1),
        SpeedInput(57.0, 1.2),
        LineInput("lightbar", level=True, hw_time_s=1.3),
        LineInput("taser_armed", level=True, hw_time_s=1.4),
        TaserInput("taser_trigger", 1.5),
        TaserInput("taser_arc", 1.6),
        LineInput("taser_armed", level=False, hw_time_s=1.7),
        ImuInput(1.8, 0.01, ((1.0, -0.5, 0.0),) * 2, ((90.5, -1.0, 0.0),) * 2),
        GpsInput((51.5, -0.125), 5.0, 1.9),
        BatteryInput(81, 3950, charging=False, hw_time_s=2.0),
    ]


@pytest.mark.asyncio
async def test_mcu_time_keeps_growing_across_the_millis_wrap() -> None:
    wrap = 2**32
    async with bench() as (mcu, _, log):
        for t_ms in (wrap - 100, wrap - 1, 0, 400, wrap - 50):  # the last one came late
            await mcu.send(ButtonEdge(t_ms, Button.EVENT, pressed=True))
        await log.wait_for(lambda events: len(events) >= 6)
    times = [e.hw_time_s for e in log.events if isinstance(e, ButtonInput)]
    assert times == [
        (wrap - 100) / 1000,
        (wrap - 1) / 1000,
        wrap / 1000,
        (wrap + 400) / 1000,
        (wrap - 50) / 1000,
    ]


@pytest.mark.asyncio
async def test_outputs_reach_the_mcu() -> None:
    outputs: list[Output] = [
        LedOutput(3, (255, 0, 16), "blink_fast"),
        HapticOutput(2, 0.25),
        ToneOutput(2000, 0.1, repeat=3),
        DisplayOutput("REC 00:01"),
    ]
    async with bench() as (mcu, backend, _):
        for output in outputs:
            await backend.output(output)
        await mcu.wait_for(lambda: len(mcu.received) == 4)
        counters = backend.counters()
    assert mcu.received == [
        Led(3, 255, 0, 16, LedPattern.BLINK_FAST),
        Haptic(2, 250),
        Tone(2000, 100, 3),
        DisplayText("REC 00:01"),
    ]
    shown = [m for m in mcu.received if isinstance(m, Led | Haptic | Tone | DisplayText)]
    assert [output_event(m) for m in shown] == outputs
    assert counters["frames_sent"] > 4
    assert counters["frames_received"] > 0
    assert counters["delivery_failed"] == 0


@pytest.mark.asyncio
async def test_an_output_the_wire_cannot_carry_is_a_hardware_error() -> None:
    async with bench() as (_, backend, _):
        with pytest.raises(HardwareError, match=r"Tone\.frequency_hz"):
            await backend.output(ToneOutput(5, 0.1))


@pytest.mark.asyncio
async def test_version_mismatch_fails_open_with_the_reason() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    hello = Hello(2, Role.MCU, MCU_CAPS, 0x2222, "fw 2.0").pack()
    header = struct.pack(">BBBH", 2, 0x01, 0, 0) + hello
    v2_hello = cobs_encode(header + struct.pack(">H", crc16(header))) + b"\x00"

    def answer() -> None:  # an MCU on protocol 2 answers every Hello with its own
        with contextlib.suppress(BlockingIOError):
            os.read(master, 4096)
            os.write(master, v2_hello)

    asyncio.get_running_loop().add_reader(master, answer)
    try:
        backend = SerialBackend(os.ttyname(slave), handshake_timeout_s=WAIT_S)
        with pytest.raises(HardwareError, match=r"wrong protocol version: the peer speaks .* 2,"):
            await backend.open()
        assert backend.counters()["version_mismatches"] >= 1
    finally:
        asyncio.get_running_loop().remove_reader(master)
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_silence_fails_open_after_the_handshake_timeout() -> None:
    master, slave = os.openpty()
    try:
        backend = SerialBackend(os.ttyname(slave), handshake_timeout_s=0.3)
        with pytest.raises(HardwareError, match=r"no handshake .* within 0.3 s"):
            await backend.open()
        await backend.close()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_missing_port_fails_open() -> None:
    with pytest.raises(HardwareError, match="plugged in"):
        await SerialBackend("/dev/ttyACM_bwc_absent").open()


# -- line noise ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.slow
async def test_line_noise_every_edge_arrives_exactly_once() -> None:
    # More retries than the default: at 1 % noise a 15-byte frame is hit ~15 % of the time,
    # and the test must not fail on the one edge in a million that is hit six times running.
    mcu_config = LinkConfig(ack_timeout_s=0.1, max_retries=10)
    async with running(PtyMcu(0x2222, mcu_config, noise=0.01, seed=7)) as mcu:
        backend = SerialBackend(mcu.path, boot_id=0x1111)
        await backend.open()
        mcu.write_raw(random.Random(1).randbytes(2000))  # a burst of pure garbage first
        log = EventLog()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(log.collect(backend))
                edges = [ButtonEdge(10 * i, Button.EVENT, i % 2 == 0) for i in range(320)]
                for edge in edges:
                    await mcu.send(edge)
                await log.wait_for(lambda events: len(events) >= 1 + len(edges))
                await mcu.wait_for(lambda: mcu.link.in_flight == 0)
                counters = backend.counters()
                await backend.close()
        finally:
            await backend.close()
    presses = [e for e in log.events if isinstance(e, ButtonInput)]
    assert sorted(e.hw_time_s for e in presses) == [e.t_ms / 1000 for e in edges]
    assert [e.pressed for e in sorted(presses, key=lambda e: e.hw_time_s)] == [
        e.pressed for e in edges
    ]
    assert log.of(LinkDownEvent) == []
    assert not [e for e in mcu.events if isinstance(e, DeliveryFailed)]
    assert mcu.noise_bytes > 30
    assert counters["crc_errors"] + counters["cobs_errors"] > 0
    assert counters["bytes_dropped"] > 0
    assert counters["resyncs"] > 0
    assert mcu.link.counters.retries > 0


# -- order after a loss -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_press_resent_after_its_release_is_delivered_before_it() -> None:
    # The MCU resends after 1 s (the backend holds for 2 s): room for a busy machine's stalls
    # between the release's ack and the press's retransmission.
    mcu_config = LinkConfig(ack_timeout_s=1.0, max_retries=3)
    async with bench(mcu_config=mcu_config, hold=HoldConfig(2.0, 3.0)) as (mcu, backend, log):
        await log.wait_for(lambda events: len(events) >= 1)  # the LinkUp
        await mcu.send_corrupted(ButtonEdge(1000, Button.EVENT, pressed=True))
        await mcu.send(ButtonEdge(1010, Button.EVENT, pressed=False))
        await mcu.wait_for(lambda: mcu.link.in_flight == 1)  # the release taken, not the press
        assert log.of(ButtonInput) == []  # held: the press it follows may be resent
        held_lag = backend.hold_lag_s()
        await log.wait_for(lambda events: len(events) >= 3)
        counters, lag = backend.counters(), backend.hold_lag_s()
    assert log.events[1:] == [
        ButtonInput("event", pressed=True, hw_time_s=1.0),
        ButtonInput("event", pressed=False, hw_time_s=1.01),
    ]
    # Timed by when they would have arrived: the release's transit, 10 ms apart.
    assert log.ages[1] - log.ages[2] == pytest.approx(0.01, abs=0.002)
    assert log.ages[2] > 1.0  # the release waited for the press: the resend, then quiet
    assert held_lag is not None
    assert lag is None  # released and taken: the camera's world may go on
    assert counters["crc_errors"] + counters["cobs_errors"] == 1
    assert counters["holds"] == 1
    assert counters["held_inputs"] == 2
    assert counters["reordered_inputs"] == 1
    assert counters["duplicates_suppressed"] == 0


@pytest.mark.asyncio
async def test_a_reboot_during_a_hold_delivers_the_held_inputs_before_the_link_down() -> None:
    mcu_config = LinkConfig(ack_timeout_s=1.0, max_retries=3)
    async with bench(mcu_config=mcu_config, hold=HoldConfig(2.0, 3.0)) as (mcu, backend, log):
        await log.wait_for(lambda events: len(events) >= 1)
        await mcu.send_corrupted(ButtonEdge(1000, Button.EVENT, pressed=True))
        await mcu.send(ButtonEdge(1010, Button.EVENT, pressed=False))
        await mcu.wait_for(lambda: mcu.link.in_flight == 1)
        mcu.reboot(0x4444)  # before the press is resent: it went with the old boot
        await log.wait_for(lambda events: len(events) >= 4)
        lag = backend.hold_lag_s()
    assert log.events[1:] == [
        ButtonInput("event", pressed=False, hw_time_s=1.01),
        LinkDownEvent("the bench MCU restarted"),
        LinkUpEvent(
            f"{mcu.path}: fake-mcu 1.0 (boot 00004444)", backend.capabilities, rebooted=True
        ),
    ]
    assert lag is None


@pytest.mark.asyncio
async def test_on_a_clean_line_inputs_are_delivered_as_they_arrive() -> None:
    # A hold would outlast the test's wait: every input below came without one.
    async with bench(hold=HoldConfig(60.0, 60.0)) as (mcu, backend, log):
        for t_ms, pressed in ((2000, True), (2100, False), (1950, True)):  # the last came late
            await mcu.send(ButtonEdge(t_ms, Button.EVENT, pressed=pressed))
        await log.wait_for(lambda events: len(events) >= 4)
        assert backend.hold_lag_s() is None
        counters = backend.counters()
    assert [input_time(e) for e in log.of(ButtonInput)] == [2.0, 2.1, 1.95]  # as they came
    assert log.ages == [0.0] * 4
    assert counters["holds"] == counters["held_inputs"] == counters["reordered_inputs"] == 0


@pytest.mark.asyncio
async def test_inputs_waiting_for_the_consumer_hold_the_camera_world_back() -> None:
    """After a host stall the reader may decode the frames that waited behind it before the
    consumer (the hardware shell) has placed them: meanwhile the camera must not play its world
    on (``hold_lag_s``), or a gesture deadline would be judged without them. Bounded by
    ``max_hold_s``, so a consumer that stopped does not stop the camera."""
    async with running(PtyMcu(0x2222)) as mcu:
        backend = SerialBackend(mcu.path, boot_id=0x1111, hold=HoldConfig(0.2, 0.4))
        await backend.open()
        try:
            events = backend.timed_events()
            assert isinstance((await anext(events))[0], LinkUpEvent)
            assert backend.hold_lag_s() is None
            await mcu.send(ButtonEdge(2000, Button.EVENT, pressed=True))
            async with asyncio.timeout(5.0):
                while backend.hold_lag_s() is None:  # decoded, not yet taken
                    await asyncio.sleep(0.001)
            assert backend.hold_lag_s() == math.inf
            event, age = await anext(events)
            assert (event, age) == (ButtonInput("event", pressed=True, hw_time_s=2.0), 0.0)
            assert backend.hold_lag_s() is None  # taken: the world may go on
            await mcu.send(ButtonEdge(2100, Button.EVENT, pressed=False))
            async with asyncio.timeout(5.0):
                while backend.hold_lag_s() is None:
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0.45)  # nobody takes it
            assert backend.hold_lag_s() is None
        finally:
            await backend.close()


# -- link loss and unplug -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_silent_mcu_is_link_down_then_up_with_outputs_resent() -> None:
    async with bench(FAST) as (mcu, backend, log):
        await backend.output(LedOutput(0, (0, 255, 0), "solid"))
        await mcu.wait_for(lambda: len(mcu.received) == 1)
        mcu.pause()
        await log.wait_for(lambda events: isinstance(events[-1], LinkDownEvent))
        down = log.events[-1]
        assert isinstance(down, LinkDownEvent)
        assert "serial link lost" in down.reason
        mcu.resume()
        await log.wait_for(lambda events: isinstance(events[-1], LinkUpEvent))
        first, again = log.events[0], log.events[-1]
        assert isinstance(first, LinkUpEvent)
        assert again == LinkUpEvent(first.description, backend.capabilities, rebooted=False)
        await mcu.wait_for(lambda: len(mcu.received) == 2)
        assert mcu.received[1] == mcu.received[0]
        assert backend.counters()["link_losses"] == 1
        assert backend.counters()["reconnects"] == 1


@pytest.mark.asyncio
async def test_mcu_reset_on_the_same_port_is_a_reboot() -> None:
    async with bench() as (mcu, backend, log):
        await backend.output(DisplayOutput("REC"))
        await backend.output(HapticOutput(1, 0.5))
        await mcu.send(ButtonEdge(90_000, Button.EVENT, pressed=True))
        await mcu.wait_for(lambda: len(mcu.received) == 2)
        mcu.reboot(0x4444)
        await log.wait_for(lambda events: isinstance(events[-1], LinkUpEvent))
        await mcu.wait_for(lambda: len(mcu.received) == 1)
        await mcu.send(ButtonEdge(20, Button.EVENT, pressed=False))
        await log.wait_for(lambda events: isinstance(events[-1], ButtonInput))
    assert log.events[1:] == [
        ButtonInput("event", pressed=True, hw_time_s=90.0),
        LinkDownEvent("the bench MCU restarted"),
        LinkUpEvent(
            f"{mcu.path}: fake-mcu 1.0 (boot 00004444)", backend.capabilities, rebooted=True
        ),
        ButtonInput("event", pressed=False, hw_time_s=0.02),
    ]
    assert mcu.received == [DisplayText("REC")]  # the state again, not the old buzz


@pytest.mark.asyncio
async def test_states_beyond_max_in_flight_are_sent_as_acks_come_back() -> None:
    async with bench(LinkConfig(max_in_flight=2)) as (mcu, backend, _):
        for index in range(12):
            await backend.output(LedOutput(index, (index, 0, 0), "solid"))
        await backend.output(ToneOutput(440, 0.1))  # no room and nothing to keep: dropped
        await mcu.wait_for(
            lambda: {m.led for m in mcu.received if isinstance(m, Led)} == set(range(12))
        )
        counters = backend.counters()
    assert counters["outputs_deferred"] >= 10
    assert counters["outputs_dropped"] == 1
    latest = {m.led: m for m in mcu.received if isinstance(m, Led)}
    assert latest == {i: Led(i, i, 0, 0, LedPattern.SOLID) for i in range(12)}


@pytest.mark.asyncio
async def test_unplug_then_replug_elsewhere_behind_a_symlink(tmp_path: Path) -> None:
    alias = tmp_path / "usb-bench-mcu-if00"
    first = PtyMcu(0x2222)
    alias.symlink_to(first.path)
    not_back = LogWaiter("not back yet")
    logger = logging.getLogger("device.backends.serial")
    logger.addHandler(not_back)
    logger.setLevel(logging.DEBUG)
    async with running(first):
        backend = SerialBackend(str(alias), boot_id=0x1111, reconnect_interval_s=0.05)
        await backend.open()
        log = EventLog()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(log.collect(backend))
                await backend.output(LedOutput(0, (0, 255, 0), "solid"))
                await backend.output(LedOutput(1, (255, 0, 0), "blink_slow"))
                await backend.output(DisplayOutput("REC"))
                await backend.output(ToneOutput(880, 0.2))
                await first.wait_for(lambda: len(first.received) == 4)

                alias.unlink()  # USB unplug: the device and its by-id link vanish
                first.unplug()
                await log.wait_for(lambda events: isinstance(events[-1], LinkDownEvent))
                await backend.output(LedOutput(1, (0, 0, 255), "solid"))  # kept for later
                async with asyncio.timeout(WAIT_S):
                    await not_back.seen.wait()  # it tried the vanished path at least once

                async with running(PtyMcu(0x3333)) as second:
                    alias.symlink_to(second.path)  # replugged: another tty, same by-id name
                    await log.wait_for(lambda events: isinstance(events[-1], LinkUpEvent))
                    await second.wait_for(lambda: len(second.received) == 3)
                    await second.send(ButtonEdge(5, Button.EVENT, pressed=True))
                    await log.wait_for(lambda events: isinstance(events[-1], ButtonInput))
                    counters = backend.counters()
                    await backend.close()
        finally:
            await backend.close()
            logger.removeHandler(not_back)
            logger.setLevel(logging.NOTSET)
    down, up, press = log.events[-3:]
    assert isinstance(down, LinkDownEvent)
    assert "gone" in down.reason
    assert isinstance(up, LinkUpEvent)
    assert up.rebooted
    assert press == ButtonInput(
        "event", pressed=True, hw_time_s=0.005
    )  # the new boot's clock starts again
    assert sorted(second.received, key=repr) == sorted(
        [
            Led(0, 0, 255, 0, LedPattern.SOLID),
            Led(1, 0, 0, 255, LedPattern.SOLID),
            DisplayText("REC"),
        ],
        key=repr,
    )  # the latest state of each output, and no replayed tone
    assert counters["link_losses"] == 1
    assert counters["reconnects"] == 1
    assert counters["port_losses"] >= 1
    assert counters["reopen_failures"] >= 1


# -- pieces without I/O -------------------------------------------------------------------------


def test_registry_builds_the_serial_backend() -> None:
    assert backend_class("serial") is SerialBackend
    backend = open_backend("serial", port="/dev/ttyACM0", baudrate=9600)
    assert isinstance(backend, SerialBackend)
    assert backend.capabilities == frozenset()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"port": ""}, "port must be"),
        ({"baudrate": 0}, "baudrate must be > 0"),
        ({"reconnect_interval_s": float("nan")}, "reconnect_interval_s"),
        ({"firmware": "x" * 33}, "Hello.firmware"),
        ({"boot_id": 0}, "Hello.boot_id"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        SerialBackend(**{"port": "/dev/ttyACM0", **options})  # type: ignore[arg-type]


def test_wire_codes_and_backend_names_agree() -> None:
    for button in Button:
        edge = input_event(ButtonEdge(0, button, pressed=True), 0.0)
        assert isinstance(edge, ButtonInput)
        assert edge.button == button.name.lower()
    for pattern in LedPattern:
        led = output_event(Led(0, 0, 0, 0, pattern))
        assert isinstance(led, LedOutput)
        assert led.pattern == pattern.name.lower()
    assert capability_names(0xFFFF_FFFF) == CAPABILITIES


def test_event_queue_drops_imu_batches_first() -> None:
    dropped: list[BackendEvent] = []
    queue = EventQueue(3, dropped.append)
    imu = ImuInput(0.0, 0.01, ((0.0, 0.0, 1.0),), ((0.0, 0.0, 0.0),))
    press = ButtonInput("event", pressed=True, hw_time_s=1.0)
    battery = BatteryInput(50, 3800, charging=False, hw_time_s=2.0)
    for event in (imu, press, battery, ButtonInput("event", pressed=False, hw_time_s=3.0)):
        queue.put(Delivery(event))
    assert dropped == [imu]
    queue.put(Delivery(ButtonInput("power", pressed=True, hw_time_s=4.0)))
    assert dropped == [imu, battery]
    queue.put(Delivery(ButtonInput("power", pressed=False, hw_time_s=5.0)))
    assert dropped == [imu, battery, press]
    assert len(queue) == 3


@given(
    start=st.integers(0, 0xFFFF_FFFF),
    steps=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**20)), max_size=50),
)
def test_mcu_clock_unwraps_and_places_late_stamps(start: int, steps: list[tuple[int, int]]) -> None:
    clock = McuClock()
    assert clock.milliseconds(start) == start
    true_ms = start
    for step, late_by in steps:
        true_ms += step
        assert clock.milliseconds(true_ms % 2**32) == true_ms
        # A retransmission stamped earlier lands before it, not 49.7 days later.
        assert clock.milliseconds((true_ms - late_by) % 2**32) == true_ms - late_by
    clock.restart()
    assert clock.seconds(1500) == 1.5


# -- the hold, without I/O ----------------------------------------------------------------------


def _press(t_s: float) -> ButtonInput:
    return ButtonInput("event", pressed=True, hw_time_s=t_s)


def _state(hold: InputHold) -> HoldState:
    """The hold's state (a call, so that mypy does not narrow it across steps)."""
    return hold.state


def test_every_hold_state_meets_every_input() -> None:
    assert set(TRANSITIONS) == {(state, got) for state in HoldState for got in HoldInput}


@given(st.permutations(range(6)), st.floats(0.0, 0.2))
def test_inputs_arriving_in_any_order_during_a_hold_come_out_in_hardware_order(
    order: list[int], late_s: float
) -> None:
    hold = InputHold(HoldConfig())
    hold.lost(10.0)
    for step, index in enumerate(order):  # input i was stamped at i * 10 ms
        assert hold.put(_press(index / 100), 10.0 + late_s + step / 100) is None
    assert hold.handle_timeout(10.49) == []
    assert hold.horizon(10.49) == pytest.approx(10.0 - hold.config.margin_s)
    released = hold.handle_timeout(10.5)
    assert [input_time(d.event) for d in released] == [i / 100 for i in range(6)]
    transit = min(10.0 + late_s + step / 100 - index / 100 for step, index in enumerate(order))
    assert [d.arrived for d in released] == pytest.approx([i / 100 + transit for i in range(6)])
    overtaken = sum(index < max(order[:step], default=-1) for step, index in enumerate(order))
    assert hold.counters == {"holds": 1, "held_inputs": 6, "reordered_inputs": overtaken}
    assert _state(hold) is HoldState.RELEASED
    assert hold.horizon(10.5) is not None  # until the consumer has taken them
    hold.taken()
    assert _state(hold) is HoldState.OPEN
    assert hold.horizon(10.5) is None
    assert hold.put(_press(1.0), 10.6) == Delivery(_press(1.0))


def test_each_loss_extends_the_hold() -> None:
    hold = InputHold(HoldConfig(hold_s=0.5, max_hold_s=1.5))
    hold.lost(0.0)
    hold.put(_press(0.2), 0.2)
    hold.lost(0.4)
    assert hold.next_deadline() == pytest.approx(0.9)
    assert hold.handle_timeout(0.6) == []
    assert [d.event for d in hold.handle_timeout(0.9)] == [_press(0.2)]
    assert hold.next_deadline() is None


def test_on_a_line_never_quiet_inputs_wait_at_most_max_hold_s_and_stay_in_order() -> None:
    config = HoldConfig(hold_s=0.5, max_hold_s=1.5)
    hold = InputHold(config)
    delivered: list[tuple[float, float]] = []  # (hardware time, when delivered)
    arrivals = {round(0.1 * k, 1): _press(0.1 * k) for k in range(1, 50)}
    arrivals[2.55] = _press(2.15)  # a resent input, after those sent since
    for k in range(600):
        now = k / 100
        out = hold.handle_timeout(now)
        if k % 30 == 0 and now < 5.0:
            hold.lost(now)  # a garbled byte every 0.3 s: never quiet for 0.5 s
        if (event := arrivals.get(round(now, 2))) is not None:
            direct = hold.put(event, now)
            out += [direct] if direct is not None else []
        delivered += [(input_time(d.event), now) for d in out]
        hold.taken()
    times = [t for t, _ in delivered]
    assert sorted(times) == sorted(e.hw_time_s for e in arrivals.values())
    assert times == sorted(times)  # the resent one too: it was still held when it came
    waits = [at - t for t, at in delivered if t != 2.15]
    assert max(waits) <= config.max_hold_s + 0.011
    assert hold.state is HoldState.OPEN


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["lost", "put", "tick", "taken", "release"]),
            st.floats(0.0, 0.4),  # time since the previous step
            st.integers(0, 3000),  # the input's t_ms
        ),
        max_size=80,
    )
)
def test_every_input_is_delivered_once_and_each_release_is_in_order(
    steps: list[tuple[str, float, int]],
) -> None:
    hold = InputHold(HoldConfig())
    now, sent, delivered, held = 0.0, 0, [], 0

    def take(batch: list[Delivery]) -> None:
        times = [input_time(d.event) for d in batch]
        assert times == sorted(times)
        delivered.extend(batch)

    for action, elapsed, t_ms in steps:
        now += elapsed
        if action == "lost":
            hold.lost(now)
        elif action == "put":
            sent += 1
            if (delivery := hold.put(_press(t_ms / 1000), now)) is None:
                held += 1
            else:
                delivered.append(delivery)
        elif action == "tick":
            take(hold.handle_timeout(now))
        elif action == "taken":
            hold.taken()
        else:
            take(hold.release(now))
        assert (hold.state is HoldState.OPEN) == (hold.horizon(now) is None)
        assert (hold.state is HoldState.HOLDING) == (hold.next_deadline() is not None)
    take(hold.release(now))
    assert len(delivered) == sent
    assert hold.counters["held_inputs"] == held


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"hold_s": 0.0}, "hold_s must be finite and > 0"),
        ({"max_hold_s": float("inf")}, "max_hold_s must be finite"),
        ({"margin_s": -0.1}, "margin_s must be finite and >= 0"),
        ({"hold_s": True}, "hold_s must be a number"),
        ({"hold_s": 2.0}, "max_hold_s (1.5) must be at least hold_s (2)"),
    ],
)
def test_bad_hold_options_are_config_errors(options: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        HoldConfig(**options)


def test_the_default_hold_covers_one_resend_and_at_most_the_retry_span() -> None:
    assert HoldConfig.for_link(LinkConfig()) == HoldConfig(0.5, 1.5, 0.02)
    assert HoldConfig.for_link(LinkConfig(max_retries=0)) == HoldConfig(0.5, 0.5, 0.02)


def _normalised(message: SerialMessage) -> SerialMessage:
    """What survives the trip through a backend event (GpsInput keeps no fix kind)."""
    if isinstance(message, GpsFix):
        if message.fix is GpsFixType.NONE:
            return GpsFix(message.t_ms, GpsFixType.NONE, 0, 0, 0xFFFF)
        return GpsFix(
            message.t_ms, GpsFixType.FIX_3D, *(message.lat_e7, message.lon_e7), message.accuracy_m
        )
    return message


@given(st.one_of([STRATEGIES[kind] for kind in INPUT_MESSAGES]))
def test_input_conversion_round_trips(message: SerialMessage) -> None:
    assert isinstance(message, INPUT_MESSAGES)
    event = input_event(message, message.t_ms / 1000)
    assert event.hw_time_s == message.t_ms / 1000
    assert input_message(event, message.t_ms) == _normalised(message)


@given(st.one_of([STRATEGIES[kind] for kind in (Led, Haptic, Tone, DisplayText)]))
def test_output_conversion_round_trips(message: Led | Haptic | Tone | DisplayText) -> None:
    assert output_message(output_event(message)) == message


@given(st.integers(0, 0xFFFF_FFFF))
def test_capability_bits_map_to_names(bits: int) -> None:
    names = capability_names(bits)
    assert names <= CAPABILITIES
    assert len(names) == bin(bits & 0x7FF).count("1")
