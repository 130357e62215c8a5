"""Benchmark trigger latency: a button frame written by the fake bench MCU, to the camera recording.

Usage: .venv/bin/python scripts/bench_latency.py [--presses 1000] [--quick] [--full-buffer 10]
       [--click-ms 80] [--gap-ms 120] [--floor-delay-ms 60] [--stall-ms 0] [--dir DIR] [--json]

Two processes, as ``bwc-sim bench-mcu --pty`` and ``bwc-sim run --backend serial --port PTY``:

* the MCU: ``sim.benchmcu.FakeMcu`` on a pty (``open_pty``, ``pty_port``) in a child process
  (multiprocessing spawn). It plays what the parent asks over a Pipe and sends back the instant
  ``FakeMcu.write_input`` returned for each frame (the frame's ``os.write`` to the pty master done).
* the host: the real daemon, not a copy of its steps. ``sim.live.LiveCamera`` on the idle scenario
  (the camera switched on, buffering 720p30-low, ``durability = "record"``), so
  ``device.daemon.Daemon`` runs its camera loop and its hardware tasks: ``HardwareShell`` over
  ``SerialBackend(pty slave)`` (pyserial-asyncio-fast), ``HardwareBridge`` into the camera's
  ``SensorHub``. The daemon needs MQTT, so it is connected to a private mosquitto (persistence
  off) as ``bwc-sim run`` would be; nobody receives its uploads. Stores go to DIR (/dev/shm).

Clocks: every instant is ``time.perf_counter()``, which on Linux is CLOCK_MONOTONIC, the same
clock in both processes, and the one asyncio's loop and so the daemon's camera clock read.

A press trial: the MCU writes the four Event-button edges of a double press with human timing
(press, release after --click-ms, press after --gap-ms, release after --click-ms). The host stamps
the instant the camera's state becomes RECORDING (a wrapper around the camera's state move: no
polling). The press latency is from the write of the second press frame to that instant. It
includes the gesture recognizer's debounce (``GestureConfig.debounce_s``, 30 ms): a double press
is decided only once the second press has settled, by design; so the table also shows the
latency minus the debounce, and splits it:

* transport: the write to the daemon's hardware task handing the press to ``HardwareBridge.apply``;
* the press's camera time (``HardwareClock``'s mapping of its ``t_ms``) less its write instant;
* double press decided - debounce deadline: the entry of ``Camera.activate`` (called by the hub
  at the recognizer's deadline, that camera time plus the debounce) less that deadline: how late
  the daemon's loop wakes for a timer;
* ``Camera.activate`` -> RECORDING: the camera's own work to start a recording (new recording,
  the pre-event video written into it, audit records).

The officer sees the start when the red status LED goes out: the row "red LED to the link" is
from the same write to ``SerialBackend.output`` returning for it (the LED frame queued on the
link), after the camera loop's step that started the recording. ``--stall-ms N`` blocks the
host's event loop for N ms in each press trial (``time.sleep`` in a loop callback, as a GC pause or
a slow callback would), from 10 ms before the MCU writes the second press; a double press that
then starts no recording is counted as missed.

Then the host stops the recording as a hold would (``camera.deactivate`` with a button trigger; not
timed; the default policy lets no remote command stop a recording started on the camera), checks
that the camera is buffering again and the recognizer idle, and the next trial starts.

The floor, in the same run, one sample of each after every trial, each frame written
--floor-delay-ms after the parent asks for it (so the host is as idle as before a second press,
which comes 120 ms after the previous edge; written at once, they measure faster):

* frame one-way: one ``ButtonEdge`` of the Power button (the same message type and size; the
  bridge ignores that button) from the MCU's write to its hand-over to ``HardwareBridge.apply``:
  the pty, the backend's reader, ``SerialLink`` decoding, the event queue, the shell's task.
* link Ack round trip: from the same write to the MCU's read of the host's link-level Ack of it
  (``SerialLink`` acks on receipt; the backend's writer task writes it).
* raw pty: the same frame's bytes on a second pty between the same two processes, read by the
  host's event loop (``add_reader``, stamped when ``os.read`` returns) and echoed back raw at
  once: one-way and round trip, with no protocol code at all.

The ratio printed is press p50 over frame one-way p50. The first --warmup trials (and their floor
samples) are not counted. A recording started every half second carries no pre-event video (the
buffer refilled since the last stop holds no keyframe yet), so ``--full-buffer N`` adds N
trials, each after the full pre-event buffer (30 s) has filled, shown apart. Progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.backends.bridge import HardwareBridge
from device.backends.events import BackendEvent, ButtonInput, LedOutput, Output
from device.backends.indication_map import RED
from device.backends.serial import SerialBackend
from device.camera import Camera, CameraState, Decision
from device.gestures import GestureState
from device.sensorhub import SensorHub
from protocol.common import Trigger
from protocol.serial import (
    Ack,
    Button,
    ButtonEdge,
    Frame,
    FrameDecoder,
    FrameFlag,
    encode_frame,
)
from sim.benchmcu import FakeMcu, open_pty, pty_port
from sim.broker import PrivateBroker
from sim.live import LiveCamera, LiveOptions, idle_scenario

DEVICE: Final = "cam-bench-latency"
STOP: Final = Trigger(kind="button", source="bench:stop")
REPLY_TIMEOUT_S: Final = 10.0
MISS_S: Final = 2.0
"""A double press that has not started a recording this long after its second press is missed."""
RECORDING_LED: Final = LedOutput(0, RED, "solid")
PAUSE_S: Final = 0.15
STALL_LEAD_S: Final = 0.01
"""A --stall-ms stall starts this long before the MCU writes the second press."""
"""Between the last release of a trial and the next trial's first press (after the floor)."""

Message = tuple[Any, ...]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- both processes: a Pipe read by the event loop -------------------------------------------


class PipeInbox:
    """Messages arriving on a Pipe end, read by the event loop (no thread, no polling)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                self._queue.put_nowait(self._conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            self._queue.put_nowait(None)

    async def get(self, timeout_s: float = REPLY_TIMEOUT_S) -> Message:
        """The next message; ``SystemExit`` if the peer is gone or silent for ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                message = await self._queue.get()
        except TimeoutError:
            raise SystemExit(f"no message from the other process within {timeout_s:g} s") from None
        if message is None:
            raise SystemExit("the other process is gone")
        return message

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._conn.fileno())


# -- the MCU process ---------------------------------------------------------------------------


class AckWatch:
    """Taps the MCU's received bytes: the instant each link-level Ack was read, by seq."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._acks: dict[int, float] = {}
        self._arrived = asyncio.Event()

    def tap(self, direction: str, data: bytes, now: float) -> None:
        """``FakeMcu``'s byte tap: ``now`` is the clock just after the port's read returned."""
        if direction != "rx":
            return
        for frame in self._decoder.feed(data):
            if frame.type_code == Ack.TYPE and len(frame.payload) == Ack.LAYOUT.size:
                (seq,) = Ack.LAYOUT.unpack(frame.payload)
                self._acks[seq] = now
                self._arrived.set()

    async def read_at(self, seq: int) -> float:
        """When the Ack of ``seq`` was read (waiting for it)."""
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while seq not in self._acks:
                self._arrived.clear()
                await self._arrived.wait()
        return self._acks.pop(seq)


class RawEnd:
    """One end of the raw pty: writes bytes and times the echo (the MCU's side)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._got = 0
        self._last_read = math.nan
        self._arrived = asyncio.Event()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._got += len(os.read(self._fd, 4096))
            self._last_read = time.perf_counter()
            self._arrived.set()

    async def round_trip(self, data: bytes) -> tuple[float, float]:
        """Write ``data``; (the instant the write returned, the instant the echo was all read)."""
        self._got = 0
        self._arrived.clear()
        os.write(self._fd, data)
        written = time.perf_counter()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while self._got < len(data):
                self._arrived.clear()
                await self._arrived.wait()
        return written, self._last_read


class McuSide:
    """The MCU process's work: the parent's requests played on the FakeMcu."""

    def __init__(self, mcu: FakeMcu, acks: AckWatch, raw: RawEnd) -> None:
        self.mcu = mcu
        self.acks = acks
        self.raw = raw
        self._seq: int | None = None
        mcu.on_input = self._sent

    def _sent(self, _message: object, seq: int | None) -> None:
        self._seq = seq

    async def write(self, button: Button, *, pressed: bool) -> tuple[float, int]:
        """Write one button edge; (the instant ``write_input`` returned, its seq)."""
        self._seq = None
        written = await self.mcu.write_input(ButtonEdge(self.mcu.t_ms(), button, pressed))
        return written, self._sent_seq()

    def _sent_seq(self) -> int:
        """The seq ``on_input`` reported for the input just written."""
        if self._seq is None:
            raise SystemExit("the fake MCU held the input: the link is down")
        return self._seq

    async def double_press(self, click_s: float, gap_s: float) -> Message:
        """The four edges of a double press; their write instants and their Acks' read instants."""
        plan = (
            (0.0, True),
            (click_s, False),
            (click_s + gap_s, True),
            (2 * click_s + gap_s, False),
        )
        start = time.perf_counter()
        writes: list[float] = []
        seqs: list[int] = []
        for offset, pressed in plan:
            await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
            written, seq = await self.write(Button.EVENT, pressed=pressed)
            writes.append(written)
            seqs.append(seq)
        acks = [await self.acks.read_at(seq) for seq in seqs]
        return ("double", writes, acks)

    async def frame(self, *, pressed: bool) -> Message:
        """One Power-button edge: the write instant and the read instant of its Ack."""
        written, seq = await self.write(Button.POWER, pressed=pressed)
        return ("frame", written, await self.acks.read_at(seq))

    async def raw_frame(self) -> Message:
        """The same frame's bytes over the raw pty: write and echo instants."""
        edge = ButtonEdge(self.mcu.t_ms(), Button.POWER, pressed=True)
        data = encode_frame(Frame(edge.TYPE, 1, edge.pack(), int(FrameFlag.ACK_REQUESTED)))
        written, echoed = await self.raw.round_trip(data)
        return ("raw", written, echoed)

    async def serve(self, inbox: PipeInbox, conn: Connection) -> None:
        """Answer requests until ``quit``."""
        while True:
            request = await inbox.get(timeout_s=3600.0)
            match request:
                case ("double", float(click_s), float(gap_s)):
                    conn.send(await self.double_press(click_s, gap_s))
                case ("frame", bool(pressed), float(delay_s)):
                    await asyncio.sleep(delay_s)
                    conn.send(await self.frame(pressed=pressed))
                case ("raw", float(delay_s)):
                    await asyncio.sleep(delay_s)
                    conn.send(await self.raw_frame())
                case _:
                    return


def mcu_process(conn: Connection) -> None:
    """The child process: a FakeMcu on a new pty, serving the parent's requests."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_mcu_main(conn))


async def _mcu_main(conn: Connection) -> None:
    master, slave, path = open_pty()
    raw_master, raw_slave, raw_path = open_pty()
    try:
        acks = AckWatch()
        mcu = FakeMcu(
            pty_port(master, slave), boot_id=0xBE7C, clock=time.perf_counter, tap=acks.tap
        )
        side = McuSide(mcu, acks, RawEnd(raw_master))
        inbox = PipeInbox(conn)
        conn.send(("ptys", path, raw_path))
        async with asyncio.TaskGroup() as tasks:
            running = tasks.create_task(mcu.run())
            draining = tasks.create_task(_discard(mcu))
            async with asyncio.timeout(30.0):
                await mcu.connected.wait()
            conn.send(("ready",))
            await side.serve(inbox, conn)
            running.cancel()
            draining.cancel()
    finally:
        for fd in (master, slave, raw_master, raw_slave):
            os.close(fd)


async def _discard(mcu: FakeMcu) -> None:
    """Consume the MCU's link events (the host's LED, tone and display outputs)."""
    async for _ in mcu.events():
        pass


# -- the host process ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """An input handed to the bridge: when (perf_counter), what, and the camera time it got."""

    at: float
    event: BackendEvent
    camera_t: float


class Probe:
    """Instants the host sees: inputs reaching the bridge, the double press reaching the camera,
    the camera entering RECORDING.

    Wraps three methods of the running objects (the script's own instrumentation, nothing is
    changed in what they do): ``HardwareBridge.apply``, ``Camera.activate`` and the camera's
    state move.
    """

    def __init__(self, camera: Camera, bridge: HardwareBridge) -> None:
        self.recording_at: float | None = None
        self.activated_at = math.nan
        self.pre_roll_s = math.nan
        self.applied: list[Applied] = []
        self.ignored: list[str] = []
        """Why the hub set raw input aside (glitch, bounce...), as the audit log words it."""
        self.changed = asyncio.Event()
        self.led_at: float | None = None
        """When the red status LED went to the serial link (``SerialBackend.output``)."""
        move, activate, apply = camera._move, camera.activate, bridge.apply
        audit_ignored, press = camera.audit_input_ignored, camera.press

        def timed_move(target: CameraState, now: float, reason: str) -> None:
            move(target, now, reason)
            if target is CameraState.RECORDING and self.recording_at is None:
                self.recording_at = time.perf_counter()
                recording = camera.recording
                if recording is not None:
                    self.pre_roll_s = recording.start.delivered_pre_roll_s
                self.changed.set()

        def timed_activate(trigger: Trigger, now: float) -> Decision:
            if math.isnan(self.activated_at):
                self.activated_at = time.perf_counter()
            return activate(trigger, now)

        def noted_ignored(name: str, reason: str, edges: int, now: float) -> None:
            self.ignored.append(f"{name}: {reason}")
            audit_ignored(name, reason, edges, now)

        def noted_press(source: str, note: str | None, now: float) -> Decision:
            self.ignored.append("a single press")
            return press(source, note, now)

        def timed_apply(
            event: BackendEvent,
            now: float,
            *,
            floor: float = -math.inf,
            advance: Callable[[float], None] | None = None,
        ) -> None:
            at = time.perf_counter()
            apply(event, now, floor=floor, advance=advance)
            # HardwareClock.last: the camera time the bridge gave this input.
            self.applied.append(Applied(at, event, bridge.clock.last))
            self.changed.set()

        camera._move = timed_move  # type: ignore[method-assign]
        camera.activate = timed_activate  # type: ignore[method-assign]
        bridge.apply = timed_apply  # type: ignore[method-assign]
        camera.audit_input_ignored = noted_ignored  # type: ignore[method-assign]
        camera.press = noted_press  # type: ignore[method-assign]

    def watch_led(self, backend: SerialBackend) -> None:
        """Stamp the red status LED's hand-over to the link (the officer sees the start)."""
        output = backend.output

        async def timed_output(wanted: Output) -> None:
            await output(wanted)
            if wanted == RECORDING_LED and self.led_at is None:
                self.led_at = time.perf_counter()
                self.changed.set()

        backend.output = timed_output  # type: ignore[method-assign,assignment]

    def reset(self) -> None:
        self.led_at = None
        self.recording_at = None
        self.activated_at = math.nan
        self.pre_roll_s = math.nan
        self.applied.clear()
        self.ignored.clear()

    def buttons(self, button: str) -> list[Applied]:
        return [
            applied
            for applied in self.applied
            if isinstance(applied.event, ButtonInput) and applied.event.button == button
        ]

    async def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (woken by the probe's own events) until ``done()``; False after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """``wait`` up to 10 s; ``SystemExit`` then."""
        if not await self.wait(done, REPLY_TIMEOUT_S):
            raise SystemExit(f"timed out waiting for {what}")


class RawEcho:
    """The host's end of the raw pty: stamps each read as ``os.read`` returns, echoes at once."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._loop = asyncio.get_running_loop()
        self.first_read = math.nan
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(self._fd, 4096)
            if math.isnan(self.first_read):
                self.first_read = time.perf_counter()
            os.write(self._fd, data)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


@dataclass(slots=True)
class Samples:
    """Seconds, by measure."""

    values: dict[str, list[float]] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)
    """Double presses that started no recording within ``MISS_S``: what the host saw."""

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)


@dataclass(slots=True)
class Host:
    """What the host side needs during the trials."""

    camera: Camera
    hub: SensorHub
    live: LiveCamera
    backend: SerialBackend
    probe: Probe
    raw: RawEcho
    inbox: PipeInbox
    conn: Connection

    async def ask(self, *request: Any) -> Message:
        self.conn.send(request)
        return await self.inbox.get()

    async def press_trial(
        self, click_s: float, gap_s: float, into: Samples, *, stall_s: float = 0.0
    ) -> None:
        """One double press, timed; then the recording is stopped (not timed). ``stall_s``:
        block the host's event loop that long, from ``STALL_LEAD_S`` before the second press."""
        probe, camera = self.probe, self.camera
        if camera.state is not CameraState.BUFFERING or self.hub.button.state is not (
            GestureState.IDLE
        ):
            raise SystemExit(f"not ready for a press: {camera.state}, {self.hub.button.state}")
        probe.reset()
        if stall_s > 0:
            # A stand-in for a GC pause or a slow callback: nothing runs in the host meanwhile.
            loop = asyncio.get_running_loop()
            loop.call_later(click_s + gap_s - STALL_LEAD_S, time.sleep, stall_s)
        _, writes, acks = await self.ask("double", click_s, gap_s)
        await probe.until(lambda: len(probe.buttons("event")) == 4, "the four edges")
        if not await probe.wait(lambda: probe.recording_at is not None, MISS_S):
            await self.missed(writes, into)
            log(f"missed a double press: {into.misses[-1]}")
            return
        assert probe.recording_at is not None
        await probe.until(lambda: probe.led_at is not None, "the red LED")
        assert probe.led_at is not None
        into.add("led", probe.led_at - writes[2])
        recording, second = probe.recording_at, probe.buttons("event")[2]
        # The camera's clock is loop.time() (CLOCK_MONOTONIC) since start: perf_counter's clock.
        to_perf = time.perf_counter() - self.live.daemon.now()
        placed = second.camera_t + to_perf
        due = placed + self.hub.button.config.debounce_s
        written = writes[2]
        into.add("press", recording - written)
        into.add("transport", second.at - written)
        into.add("decision", recording - second.at)
        into.add("placed", placed - written)
        into.add("timer_late", probe.activated_at - due)
        into.add("start_work", recording - probe.activated_at)
        into.add("press_ack_rtt", acks[2] - written)
        into.add("pre_roll", probe.pre_roll_s)
        decision = camera.deactivate(STOP, "benchmark", self.live.daemon.now())
        if not decision.accepted or camera.state is not CameraState.BUFFERING:
            raise SystemExit(f"the stop did not take: {decision}, {camera.state}")

    async def missed(self, writes: list[float], into: Samples) -> None:
        """No recording within ``MISS_S``: note what the host saw, let the recognizer settle."""
        edges = self.probe.buttons("event")
        window = self.hub.button.config.double_press_window_s
        await asyncio.sleep(window + 0.1)  # a lone click becomes a single press (a marker)
        late = self.probe.recording_at
        if self.camera.state is CameraState.RECORDING:
            self.camera.deactivate(STOP, "benchmark", self.live.daemon.now())
        into.misses.append(
            {
                "transport_ms": [
                    round((e.at - w) * 1e3, 2) for e, w in zip(edges, writes, strict=True)
                ],
                "written_gaps_ms": [round((b - a) * 1e3, 1) for a, b in pairwise(writes)],
                "camera_gaps_ms": [
                    round((b.camera_t - a.camera_t) * 1e3, 1) for a, b in pairwise(edges)
                ],
                "host_saw": list(self.probe.ignored),
                "recorded_late_ms": None if late is None else round((late - writes[2]) * 1e3),
            }
        )

    async def floor_samples(self, pressed: bool, delay_s: float, into: Samples) -> None:
        """One frame through the host's stack, and one over the raw pty, each ``delay_s`` later."""
        self.probe.reset()
        _, written, ack_read = await self.ask("frame", pressed, delay_s)
        await self.probe.until(lambda: bool(self.probe.buttons("power")), "the floor frame")
        into.add("frame_one_way", self.probe.buttons("power")[0].at - written)
        into.add("ack_rtt", ack_read - written)
        self.raw.first_read = math.nan
        _, written, echoed = await self.ask("raw", delay_s)
        into.add("raw_one_way", self.raw.first_read - written)
        into.add("raw_rtt", echoed - written)


async def start_host(work: Path, broker: PrivateBroker, ptys: Message, conn: Connection) -> Host:
    """The LiveCamera of ``bwc-sim run --backend serial`` on the MCU's pty, not yet running."""
    _, path, raw_path = ptys
    backend = SerialBackend(path)
    options = LiveOptions(data_dir=work / "device", broker=broker.settings(), backend=backend)
    live = LiveCamera(idle_scenario(DEVICE, 1), options, utc_now=dt.datetime.now(dt.UTC))
    assert live.bridge is not None
    camera = live.run.camera
    probe = Probe(camera, live.bridge)
    probe.watch_led(backend)
    inbox = PipeInbox(conn)
    return Host(camera, live.run.hub, live, backend, probe, RawEcho(raw_path), inbox, conn)


async def run_trials(host: Host, args: argparse.Namespace, progress: Progress) -> Samples:
    """Warm-up, the press trials with their floor samples, then the full-buffer trials."""
    click_s, gap_s = args.click_ms / 1000, args.gap_ms / 1000
    counted, full = Samples(), Samples()
    total = args.warmup + args.presses + args.full_buffer
    task = progress.add_task("presses", total=total)
    for i in range(args.warmup + args.presses):
        into = Samples() if i < args.warmup else counted
        await host.press_trial(click_s, gap_s, into, stall_s=args.stall_ms / 1000)
        trial_end = time.perf_counter()
        await host.floor_samples(i % 2 == 0, args.floor_delay_ms / 1000, into)
        await asyncio.sleep(max(0.0, trial_end + PAUSE_S - time.perf_counter()))
        progress.advance(task)
    pre_event_s = host.camera.policy.pre_event_s
    for _ in range(args.full_buffer):
        progress.update(task, description=f"full-buffer presses (each after {pre_event_s:g} s)")
        await asyncio.sleep(pre_event_s + 1.0)
        await host.press_trial(click_s, gap_s, full)
        progress.advance(task)
    for name, values in full.values.items():
        counted.values[f"full_buffer_{name}"] = values
    counted.misses += full.misses
    return counted


async def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    child = context.Process(target=mcu_process, args=(there,), daemon=True)
    child.start()
    try:
        first = PipeInbox(here)
        ptys = await first.get(timeout_s=30.0)
        first.close()
        async with PrivateBroker(kind="mosquitto", persistence=False) as broker:
            host = await start_host(work, broker, ptys, here)
            log(f"fake MCU on {ptys[1]} (raw floor on {ptys[2]}); mosquitto on {broker.url}")
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                playing = tasks.create_task(host.live.play(stop, until_uploaded=False))
                await host.inbox.get(timeout_s=30.0)  # the MCU is connected
                await _until_buffering(host.camera, playing)
                samples = await _with_progress(host, args)
                stop.set()
            host.raw.close()
            counters = dict(host.backend.counters())
            debounce_s = host.hub.button.config.debounce_s
        here.send(("quit",))
    finally:
        child.join(10)
        if child.is_alive():
            child.terminate()
    return {"samples": samples, "counters": counters, "debounce_s": debounce_s}


async def _until_buffering(camera: Camera, playing: asyncio.Task[None]) -> None:
    """Start-up (not timed): the daemon opens the backend, then powers the camera on."""
    async with asyncio.timeout(30.0):
        while camera.state is not CameraState.BUFFERING:
            if playing.done():
                raise SystemExit("the daemon stopped during start-up")
            await asyncio.sleep(0.05)


async def _with_progress(host: Host, args: argparse.Namespace) -> Samples:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        return await run_trials(host, args, progress)


# -- the report ----------------------------------------------------------------------------------

ROWS: Final = (
    ("press", "press: 2nd press frame written -> RECORDING"),
    ("press_minus_debounce", "  minus the debounce"),
    ("transport", "  transport: written -> bridge"),
    ("decision", "  decision: bridge -> RECORDING"),
    ("placed", "  the press's camera time - its write"),
    ("timer_late", "  double press decided - debounce deadline"),
    ("start_work", "  camera.activate -> RECORDING"),
    ("press_ack_rtt", "  its link Ack round trip"),
    ("led", "2nd press written -> red LED to the link"),
    ("frame_one_way", "floor: frame one-way (written -> bridge)"),
    ("ack_rtt", "floor: link Ack round trip"),
    ("raw_one_way", "floor: raw pty one-way"),
    ("raw_rtt", "floor: raw pty round trip"),
    ("full_buffer_press", "press after a full pre-event buffer"),
    ("full_buffer_start_work", "  camera.activate -> RECORDING"),
    ("full_buffer_led", "  2nd press written -> red LED to the link"),
)


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Milliseconds: p50, p90, p99, min, max, mean; and n."""
    ms = np.asarray(values, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": len(ms),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def make_report(
    args: argparse.Namespace, result: dict[str, Any], load: list[float]
) -> dict[str, Any]:
    samples: Samples = result["samples"]
    debounce_s: float = result["debounce_s"]
    values = dict(samples.values)
    if "press" not in values:
        raise SystemExit(f"no double press started a recording: {samples.misses[:3]}")
    values["press_minus_debounce"] = [v - debounce_s for v in values["press"]]
    stats = {name: summarise(v) for name, v in values.items() if name in dict(ROWS)}
    press, floor = stats["press"]["p50"], stats["frame_one_way"]["p50"]
    quarter = max(1, len(values["press"]) // 4)
    return {
        "presses": args.presses,
        "full_buffer": args.full_buffer,
        "warmup": args.warmup,
        "click_ms": args.click_ms,
        "gap_ms": args.gap_ms,
        "stall_ms": args.stall_ms,
        "debounce_ms": debounce_s * 1e3,
        "ms": stats,
        "ratio_press_p50_to_frame_one_way_p50": press / floor,
        "ratio_press_minus_debounce_p50_to_frame_one_way_p50": (
            stats["press_minus_debounce"]["p50"] / floor
        ),
        "press_p50_ms_by_quarter": [
            float(np.percentile(values["press"][i : i + quarter], 50)) * 1e3
            for i in range(0, quarter * 4, quarter)
        ],
        "pre_roll_s_median": float(np.median(values["pre_roll"])),
        "full_buffer_pre_roll_s": values.get("full_buffer_pre_roll", []),
        "missed": len(samples.misses),
        "misses": samples.misses,
        "serial_counters": result["counters"],
        "load_average_before_after": load,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def print_table(report: dict[str, Any]) -> None:
    stats = report["ms"]
    print(
        f"Trigger latency over a pty, {report['presses']:,} double presses (click "
        f"{report['click_ms']:g} ms, gap {report['gap_ms']:g} ms, host stall "
        f"{report['stall_ms']:g} ms), {report['warmup']} warm-up "
        f"trials not counted; debounce {report['debounce_ms']:g} ms"
    )
    header = f"{'ms':<44}{'n':>6}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    print(header)
    print("-" * len(header))
    for name, label in ROWS:
        if name in stats:
            s = stats[name]
            print(
                f"{label:<44}{s['n']:>6}{s['p50']:>8.2f}{s['p90']:>8.2f}{s['p99']:>8.2f}"
                f"{s['max']:>8.2f}"
            )
    print(
        f"press p50 / frame one-way p50: {report['ratio_press_p50_to_frame_one_way_p50']:.1f}; "
        f"(press - debounce) p50 / frame one-way p50: "
        f"{report['ratio_press_minus_debounce_p50_to_frame_one_way_p50']:.2f}"
    )
    quarters = ", ".join(f"{v:.2f}" for v in report["press_p50_ms_by_quarter"])
    print(f"press p50 by quarter of the run (ms): {quarters}")
    print(f"pre-event video written at each start: median {report['pre_roll_s_median']:.2f} s")
    if report["full_buffer_pre_roll_s"]:
        full = ", ".join(f"{v:.1f}" for v in report["full_buffer_pre_roll_s"])
        print(f"full-buffer trials' pre-event video (s): {full}")
    print(
        f"missed double presses (no recording within {MISS_S:g} s): {report['missed']} of "
        f"{report['presses'] + report['full_buffer']}"
    )
    for miss in report["misses"][:5]:
        print(f"  {miss}")
    counters = report["serial_counters"]
    odd = {k: v for k, v in counters.items() if v and k not in ("frames_sent", "frames_received")}
    print(f"serial link: {counters.get('frames_received', 0):,} frames received; other: {odd}")
    before, after = report["load_average_before_after"]
    print(f"load average (1 min) before / after: {before:.2f} / {after:.2f}; {report['machine']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presses", type=int, default=1000, help="counted press trials")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 presses")
    parser.add_argument("--warmup", type=int, default=5, help="trials not counted (default 5)")
    parser.add_argument("--click-ms", type=float, default=80.0, help="press length (ms)")
    parser.add_argument("--gap-ms", type=float, default=120.0, help="release to 2nd press (ms)")
    parser.add_argument(
        "--floor-delay-ms",
        type=float,
        default=60.0,
        help="the MCU writes each floor frame this long after the request, so the host is as "
        "idle as before a press (default 60 ms, over the daemon's 50 ms tick)",
    )
    parser.add_argument(
        "--full-buffer",
        type=int,
        help="extra trials, each after the pre-event buffer has filled (31 s each; default 10, "
        "0 with --quick)",
    )
    parser.add_argument(
        "--stall-ms",
        type=float,
        default=0.0,
        help="block the host's event loop this long in every press trial (not the full-buffer "
        f"ones), from {STALL_LEAD_S * 1e3:g} ms before the second press (default 0)",
    )
    parser.add_argument("--dir", type=Path, help="where the camera's store goes (/dev/shm)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.quick:
        args.presses = min(args.presses, 50)
    if args.full_buffer is None:
        args.full_buffer = 0 if args.quick else 10
    if args.presses < 1 or args.warmup < 0 or args.full_buffer < 0 or args.stall_ms < 0:
        parser.error(
            "--presses must be at least 1; --warmup, --full-buffer and --stall-ms at least 0"
        )
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        raise SystemExit("mosquitto is not installed")
    default_dir = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=args.dir or default_dir))
    load = [os.getloadavg()[0]]
    try:
        result = asyncio.run(bench(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    report = make_report(args, result, load)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
