"""The fake bench microcontroller and the bench console, as real processes on real ptys.

``bwc-sim bench-mcu --pty`` runs as a subprocess; each test opens the pty it announces (through
its ``--link`` symlink, as a host would use /dev/serial/by-id) with a host-side ``SerialLink``
in this process, and drives the MCU through its stdin. Nothing sleeps to wait: every wait is on
a line, an event or a message, bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import pytest
import pytest_asyncio

from device.errors import HardwareError
from protocol.serial import (
    Button,
    ButtonEdge,
    Capability,
    Connected,
    DisplayText,
    Haptic,
    Holster,
    Led,
    LedPattern,
    MessageReceived,
    Role,
    SerialLink,
    SerialMessage,
    Taser,
    TaserEvent,
    Tone,
    VehicleInput,
    VehicleInputKind,
    t_ms_delta,
)
from sim.benchmcu import MCU_CAPABILITIES, FakeMcu, FdPort, LinkShell, open_pty, pty_port
from sim.benchmcu_format import describe
from sim.benchmcu_script import (
    CommandError,
    GestureCommand,
    SendCommand,
    WaitCommand,
    parse_command,
    plan_scenario,
)
from sim.scenario import parse_scenario

WAIT_S: Final = 10.0
"""Bound on every wait: generous for a noisy 2-core machine; a healthy step takes milliseconds."""
M = TypeVar("M", bound=SerialMessage)
T = TypeVar("T")


class Child:
    """A ``bwc-sim`` child process: its stdout lines as they come, its stdin, its exit."""

    def __init__(self, process: asyncio.subprocess.Process, link: Path, path: str = "") -> None:
        self.process = process
        self.link = link
        """The ``--link`` symlink (of the MCU this is, or talks to)."""
        self.path = path
        """The first line of a ``bench-mcu``: its pty."""
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.seen: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.put_nowait(line.decode().rstrip("\n"))

    def send(self, *commands: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{command}\n" for command in commands).encode())

    async def expect(self, prefix: str) -> str:
        """The next line starting with ``prefix`` (every line read is kept in ``seen``)."""
        try:
            async with asyncio.timeout(WAIT_S):
                while True:
                    line = await self.lines.get()
                    self.seen.append(line)
                    if line.startswith(prefix):
                        return line
        except TimeoutError:
            pytest.fail(f"no line {prefix!r} in {WAIT_S} s; the last ones: {self.seen[-10:]}")

    async def stop(self, signum: int | None = signal.SIGTERM) -> int:
        """Send ``signum`` (None: it is quitting by itself) and return the exit code."""
        if signum is not None:
            self.process.send_signal(signum)
        code = await within(self.process.wait(), "the process to end")
        await within(self._reader, "its output to end")
        return code


class Host:
    """The host end: a ``SerialLink(role=HOST)`` over the pty slave, opened in raw mode."""

    def __init__(self, path: Path, boot_id: int = 0x0517) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.link = SerialLink(Role.HOST, Capability(0), boot_id, "test host")
        self.shell = LinkShell(self.link, FdPort(self.fd))
        self.task = asyncio.create_task(self.shell.run())

    async def connected(self) -> Connected:
        while True:
            event = await within(self.shell.next_event(), "the handshake")
            if isinstance(event, Connected):
                return event

    async def message(self, kind: type[M]) -> M:
        """The next message received of class ``kind`` (others are skipped)."""
        while True:
            event = await within(self.shell.next_event(), f"a {kind.__name__}")
            if isinstance(event, MessageReceived) and isinstance(event.message, kind):
                return event.message

    async def close(self) -> None:
        self.task.cancel()
        # Cancelled, or already ended by the MCU's death (the pty hung up).
        with contextlib.suppress(asyncio.CancelledError, HardwareError):
            await self.task
        os.close(self.fd)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sim.cli", *args]


async def within(awaitable: Awaitable[T], what: str) -> T:
    """``awaitable``'s result, failing the test naming ``what`` after ``WAIT_S``."""
    try:
        async with asyncio.timeout(WAIT_S):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")


Start = Callable[..., Awaitable[Child]]


@pytest_asyncio.fixture
async def start_mcu(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts ``bench-mcu --pty --link tmp_path/ttyBENCH`` children; kills any left at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Child:
        link = tmp_path / "ttyBENCH"
        process = await asyncio.create_subprocess_exec(
            *cli("bench-mcu", "--pty", "--link", str(link), *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(process)
        assert process.stdout is not None
        first = await within(process.stdout.readline(), "the pty path")
        assert first.startswith(b"/dev/"), first
        return Child(process, link, first.decode().strip())

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest_asyncio.fixture
async def hosts() -> AsyncIterator[list[Host]]:
    """Host ends to close at the end of the test."""
    opened: list[Host] = []
    yield opened
    for host in opened:
        await host.close()


# -- the command language -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "side", "expected"),
    [
        ("press", Role.MCU, GestureCommand("press", Button.EVENT)),
        ("double power", Role.MCU, GestureCommand("double_press", Button.POWER)),
        ("hold 2.5 function", Role.MCU, GestureCommand("hold", Button.FUNCTION, 2.5)),
        ("HOLD", Role.MCU, GestureCommand("hold", Button.EVENT, None)),
        ("down event", Role.MCU, SendCommand(ButtonEdge(0, Button.EVENT, pressed=True))),
        ("holster drawn", Role.MCU, SendCommand(Holster(0, drawn=True))),
        ("door closed", Role.MCU, SendCommand(VehicleInput(0, VehicleInputKind.DOOR, 0))),
        ("speed 87.6", Role.MCU, SendCommand(VehicleInput(0, VehicleInputKind.SPEED, 88))),
        ("taser arc", Role.MCU, SendCommand(Taser(0, TaserEvent.ARC))),
        ("led 0 255 0 0", Role.HOST, SendCommand(Led(0, 255, 0, 0, LedPattern.SOLID))),
        ("tone 880 200ms x2", Role.HOST, SendCommand(Tone(880, 200, 2))),
        ("haptic 1 300", Role.HOST, SendCommand(Haptic(1, 300))),
        ('display "REC \\u25cf"', Role.HOST, SendCommand(DisplayText("REC \u25cf"))),
        ("display on duty", Role.HOST, SendCommand(DisplayText("on duty"))),
        ("wait 0.5", Role.HOST, WaitCommand(0.5)),
        ("  # a comment", Role.MCU, None),
    ],
)
def test_commands_parse(line: str, side: Role, expected: object) -> None:
    assert parse_command(line, side) == expected


@pytest.mark.parametrize(
    ("line", "side", "says"),
    [
        ("prss", Role.MCU, "did you mean 'press'?"),
        ("holster up", Role.MCU, "usage: holster drawn|holstered"),
        ("speed -1", Role.MCU, "KMH must be 0-65535"),
        ("battery 101", Role.MCU, "PERCENT must be 0-100"),
        ("led 0 255 0", Role.HOST, "usage: led INDEX R G B"),
        ("led 0 256 0 0", Role.HOST, "R must be 0-255, got 256"),
        ("tone 5 100", Role.HOST, "HZ must be 20-20000"),
        ("display " + "x" * 65, Role.HOST, "TEXT: expected"),
        ("led 0 1 2 3", Role.MCU, "led is for bwc-sim bench"),
        ("press", Role.HOST, "press is for the MCU"),
    ],
)
def test_bad_commands_say_what_is_wrong(line: str, side: Role, says: str) -> None:
    with pytest.raises(CommandError, match=re.escape(says)):
        parse_command(line, side)


def test_scenario_plan_uses_the_hardware_actions_in_time_order() -> None:
    scenario = parse_scenario(SCENARIO, "<bench test>")
    plan = plan_scenario(scenario)
    assert [describe(timed.message) for timed in plan] == EXPECTED_SCENARIO
    assert [timed.at_s for timed in plan] == sorted(timed.at_s for timed in plan)
    assert plan == plan_scenario(scenario)  # same seed, same timing
    with_taser = plan_scenario(scenario, taser_triggers=True)
    assert describe(with_taser[-1].message) == "taser trigger"


STEPS: Final[list[tuple[float, str, dict[str, object]]]] = [
    (0, "power_on", {}),
    (0.1, "button", {"gesture": "press"}),
    (0.6, "input", {"line": "holster"}),
    (0.7, "input", {"line": "lightbar", "glitch_s": 0.005}),
    (0.8, "speed", {"kmh": 80}),
    (0.9, "input", {"line": "taser_armed"}),
    (1.0, "trigger", {"kind": "taser_trigger"}),
]
SCENARIO: Final = "\n".join(
    ["[scenario]", "duration = 10", "[device]", 'id = "cam-bench"', "seed = 7"]
    + [
        f'[[timeline]]\nat = {at}\ndo = "{action}"\n'
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in params.items())
        for at, action, params in STEPS
    ]
)
EXPECTED_SCENARIO: Final = [
    "button event down",
    "button event up",
    "holster drawn",
    "speed 80",
    "taser armed",
]
"""The 5 ms lightbar glitch is filtered by the MCU; the trigger action is the camera's own."""


# -- bench-mcu as a process ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_handshake_commands_and_outputs(start_mcu: Start, hosts: list[Host]) -> None:
    mcu = await start_mcu("--boot-id", "0x1234", "--seed", "1")
    assert mcu.link.readlink() == Path(mcu.path)
    host = Host(mcu.link)
    hosts.append(host)
    connected = await host.connected()
    assert connected.peer.boot_id == 0x1234
    assert connected.peer.capabilities == MCU_CAPABILITIES
    assert (
        await mcu.expect("connected host") == 'connected host boot=0x00000517 firmware="test host"'
    )

    mcu.send("press", "bogus 1", "holster drawn", "hold 0.3 power")
    down, up = await host.message(ButtonEdge), await host.message(ButtonEdge)
    assert (down.button, down.pressed, up.pressed) == (Button.EVENT, True, False)
    assert 0 < t_ms_delta(up.t_ms, down.t_ms) < 1000
    assert (await mcu.expect("error:")).startswith("error: unknown command 'bogus'")
    assert (await host.message(Holster)).drawn is True  # a bad line did not stop it
    hold_down, hold_up = await host.message(ButtonEdge), await host.message(ButtonEdge)
    assert (hold_down.button, hold_down.pressed, hold_up.pressed) == (Button.POWER, True, False)
    assert 280 <= t_ms_delta(hold_up.t_ms, hold_down.t_ms) <= 400
    await mcu.expect("ok hold power 0.3s")

    for output in (Led(0, 255, 0, 0, LedPattern.SOLID), Tone(880, 200, 2), Haptic(1, 300)):
        host.shell.send(output)
    host.shell.send(DisplayText("REC"))
    for line in ("led 0 255 0 0 solid", "tone 880 200ms x2", "haptic 1 300ms", 'display "REC"'):
        await mcu.expect(line)

    mcu.send("quit")
    await mcu.expect("ok quit")
    assert await mcu.stop(None) == 0
    assert not mcu.link.is_symlink()  # a clean exit removes the link


@pytest.mark.asyncio
async def test_noise_still_delivers_every_reliable_input(
    start_mcu: Start, hosts: list[Host]
) -> None:
    mcu = await start_mcu("--noise", "0.01", "--seed", "3")
    host = Host(mcu.link)
    hosts.append(host)
    await host.connected()
    speeds = list(range(1, 41))
    mcu.send(*(f"speed {kmh}" for kmh in speeds))
    received = [(await host.message(VehicleInput)).value for _ in speeds]
    assert sorted(received) == speeds  # each exactly once: none lost, none duplicated
    assert host.link.counters.resyncs > 0  # and the noise was there
    assert await mcu.stop(signal.SIGINT) == 0


@pytest.mark.asyncio
async def test_a_restarted_mcu_is_found_at_the_same_link(
    start_mcu: Start, hosts: list[Host]
) -> None:
    first = await start_mcu("--boot-id", "0xA")
    host = Host(first.link)
    hosts.append(host)
    assert (await host.connected()).peer.boot_id == 0xA
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert first.link.is_symlink()  # killed: nobody cleaned up

    second = await start_mcu("--boot-id", "0xB")
    assert second.link.readlink() == Path(second.path)
    again = Host(second.link, boot_id=0x0518)
    hosts.append(again)
    assert (await again.connected()).peer.boot_id == 0xB
    second.send("taser trigger")
    assert (await again.message(Taser)).event is TaserEvent.TRIGGER
    assert await second.stop() == 0
    assert not second.link.exists()


@pytest.mark.asyncio
async def test_scenario_inputs_play_in_order_after_the_handshake(
    start_mcu: Start, hosts: list[Host], tmp_path: Path
) -> None:
    scenario = tmp_path / "bench.toml"
    scenario.write_text(SCENARIO)
    mcu = await start_mcu("--scenario", str(scenario))
    host = Host(mcu.link)
    hosts.append(host)
    await host.connected()
    await mcu.expect("scenario started")
    inputs = [await host.message(SerialMessage) for _ in EXPECTED_SCENARIO]
    inputs.sort(key=lambda message: t_ms_delta(getattr(message, "t_ms", 0), 0))
    assert [describe(message) for message in inputs] == EXPECTED_SCENARIO
    plan = plan_scenario(parse_scenario(SCENARIO))
    first_ms = getattr(inputs[0], "t_ms", 0)
    for timed, message in zip(plan, inputs, strict=True):
        offset_ms = t_ms_delta(getattr(message, "t_ms", 0), first_ms)
        assert abs(offset_ms - (timed.at_s - plan[0].at_s) * 1000) < 150
    await mcu.expect("scenario done")
    mcu.send("quit")
    assert await mcu.stop(None) == 0


@pytest.mark.asyncio
async def test_a_bad_scenario_exits_2_with_the_parsers_message(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SCENARIO.replace('line = "holster"', 'line = "holstr"'))
    assert "holstr" in scenario.read_text()
    process = await asyncio.create_subprocess_exec(
        *cli("bench-mcu", "--pty", "--scenario", str(scenario)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(process.communicate(), "bench-mcu to refuse the scenario")
    assert process.returncode == 2
    assert out == b""
    assert "bad.toml:" in err.decode()
    assert "holstr" in err.decode()


# -- the bench console --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bench_console_shows_frames_and_drives_outputs(start_mcu: Start) -> None:
    mcu = await start_mcu("--boot-id", "0xBE4C")
    bench = await asyncio.create_subprocess_exec(
        *cli("bench", "--port", str(mcu.link)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    console = Child(bench, mcu.link)
    try:
        await console.expect('connected mcu boot=0x0000be4c firmware="bwc-sim fake-mcu 1"')
        console.send("led 3 0 255 0 blink_slow", "led 300 0 0 0")
        assert (await console.expect("ok led")).startswith("ok led 3 0 255 0 blink_slow seq=")
        await console.expect("error: led: INDEX must be 0-255")
        await mcu.expect("led 3 0 255 0 blink_slow")
        mcu.send("holster holstered")
        await console.expect("input holster holstered")
        console.send("quit")
        assert (await console.expect("counters ")).startswith("counters frames_sent=")
        assert await within(bench.wait(), "the console to quit") == 0
    finally:
        if bench.returncode is None:
            bench.kill()
            await bench.wait()
    assert any(" rx #" in line and " Holster " in line for line in console.seen)
    assert any(" tx #" in line and " Led led=3 " in line for line in console.seen)


@pytest.mark.asyncio
async def test_bench_console_on_a_missing_port_exits_2(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *cli("bench", "--port", str(tmp_path / "ttyNONE")),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await within(process.communicate(), "bench to refuse the port")
    assert process.returncode == 2
    assert "no serial port at" in err.decode()


# -- FakeMcu in-process (the latency benchmark's hook) ------------------------------------------


@pytest.mark.asyncio
async def test_fake_mcu_in_process_holds_inputs_and_times_writes() -> None:
    master, slave, path = open_pty()
    mcu = FakeMcu(pty_port(master, slave), boot_id=0xF00D)
    drawn = mcu.line("holster", level=True)  # before any host: held in the backlog
    assert list(mcu.backlog) == [drawn]
    host = Host(Path(path))
    try:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(mcu.run())
            assert await host.message(Holster) == drawn  # sent once the link connected
            assert mcu.connected.is_set()
            assert not mcu.backlog
            written = await mcu.write_input(ButtonEdge(mcu.t_ms(), Button.EVENT, pressed=True))
            assert (await host.message(ButtonEdge)).pressed is True
            assert written <= mcu.shell.clock()  # the benchmark's "frame written" instant
            task.cancel()
    finally:
        await host.close()
        os.close(master)
        os.close(slave)


@pytest.mark.asyncio
async def test_a_pty_nobody_reads_drops_bytes_instead_of_blocking() -> None:
    master, slave, _ = open_pty()
    try:
        # Several times what the pty buffers: each stall discards the unread bytes and goes on.
        await within(pty_port(master, slave, stall_s=0.05).write(bytes(1 << 16)), "the writes")
    finally:
        os.close(master)
        os.close(slave)
