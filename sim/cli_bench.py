"""``bwc-sim bench-mcu`` (a fake bench microcontroller on a pty) and ``bwc-sim bench`` (a console).

``bench-mcu --pty`` prints the pty's path as its first line (``--link PATH`` also points a
symlink there, a stable name across restarts, removed on exit), then plays the MCU side of the
serial bench link (docs/protocol.md, "Serial bench link"). It prints one line per event:
``connected host boot=0x... firmware="..."``, ``link lost: ...``, ``host rebooted: ...``, each
output received (``led 0 255 0 0 solid``, ``tone 880 200ms x2``, ``haptic 1 300ms``,
``display "REC"``), and ``sent <input> t_ms=N seq=S`` (or ``queued ...`` while no host is
connected) for each input. Commands are read from stdin, one per line (``help`` lists them), and
answered with ``ok ...`` or ``error: ...``; end of input quits (unless stdin is /dev/null, as
for a background job: then only a signal or ``quit`` does). With ``--scenario FILE`` it plays
the scenario's hardware actions, timed from the first handshake (``scenario started`` ...
``scenario done``), then serves until ``quit``, SIGINT or SIGTERM (end of input does not quit).

``bench --port URL`` is the host side for a person at a real board: every frame both ways is
printed as it passes, with link events; stdin takes output commands (``led``, ``tone``,
``haptic``, ``display``) to try the board's wiring; end of input, ``quit`` or Ctrl-C ends it and
prints the link counters. ``--json``: one JSON object per line instead.

Exit codes: 0 clean stop; 1 the port failed; 2 bad usage, a bad scenario or a port that cannot
be opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import random
import signal
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from device.errors import DeviceError, HardwareError
from device.serialport import open_byte_link
from protocol.errors import LocalProtocolError
from protocol.serial import Capability, Role, SerialLink, SerialMessage
from sim.benchmcu import FakeMcu, LinkShell, open_pty, pty_port
from sim.benchmcu_format import FrameLog, describe, say
from sim.benchmcu_script import (
    Command,
    CommandError,
    GestureCommand,
    HelpCommand,
    QuitCommand,
    SendCommand,
    TimedInput,
    WaitCommand,
    parse_command,
    plan_scenario,
    usage,
)
from sim.scenario import load_scenario

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HOST_FIRMWARE = "bwc-sim bench"


def register(commands: Any) -> None:
    """Add the ``bench-mcu`` and ``bench`` subcommands."""
    fmt = argparse.RawDescriptionHelpFormatter
    mcu = commands.add_parser(
        "bench-mcu", help="a fake bench microcontroller on a pty", description=__doc__,
        formatter_class=fmt,
    )  # fmt: skip
    mcu.add_argument("--pty", action="store_true", required=True, help="serve on a new pty")
    mcu.add_argument("--link", type=Path, metavar="PATH", help="keep a symlink to the pty here")
    mcu.add_argument(
        "--scenario", type=Path, metavar="FILE", help="play this scenario's hardware actions"
    )
    mcu.add_argument("--noise", type=float, default=0.0, metavar="FRACTION",
                     help="garbage bytes inserted per byte written (0-0.5)")  # fmt: skip
    mcu.add_argument("--seed", type=int, help="seed of the noise and of gesture timing")
    mcu.add_argument("--boot-id", type=_boot_id, metavar="N",
                     help="boot id, 1-0xFFFFFFFF (default: random)")  # fmt: skip
    mcu.set_defaults(handler=run_mcu)
    bench = commands.add_parser(
        "bench", help="a console on a bench microcontroller's port", description=__doc__,
        formatter_class=fmt,
    )  # fmt: skip
    bench.add_argument("--port", required=True, metavar="URL", help="a device path or port URL")
    bench.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    bench.add_argument("--json", action="store_true", help="one JSON object per line")
    bench.set_defaults(handler=run_host)


def _boot_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number such as 0x1a2b, got {text!r}"
        ) from None
    if not 1 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"must be 1 to 0xFFFFFFFF, got {text}")
    return value


def _fail(command: str, message: object) -> int:
    print(f"bwc-sim {command}: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


# -- bench-mcu ----------------------------------------------------------------------------------


def run_mcu(args: argparse.Namespace) -> int:
    """Serve the fake MCU on a new pty until quit or a signal; exit code."""
    started = time.monotonic()  # the MCU's t_ms counts from here, as from a power-on
    if not 0.0 <= args.noise <= 0.5:
        return _fail("bench-mcu", f"--noise must be a fraction from 0 to 0.5, got {args.noise}")
    if args.link is not None and args.link.exists() and not args.link.is_symlink():
        return _fail("bench-mcu", f"--link {args.link}: exists and is not a symlink; not touched")
    plan = None
    try:
        if args.scenario is not None:
            plan = plan_scenario(load_scenario(args.scenario))
    except DeviceError as exc:
        return _fail("bench-mcu", exc)
    master, slave, path = open_pty()
    try:
        if args.link is not None:
            point_symlink(args.link, path)
        say(path)  # after the link: a reader of this line may open either
        rng = random.Random(args.seed)
        boot_id = args.boot_id or random_boot_id()
        port = pty_port(master, slave)
        mcu = FakeMcu(port, boot_id=boot_id, epoch=started, noise=args.noise, rng=rng)
        asyncio.run(_mcu_main(mcu, plan))
    except HardwareError as exc:
        print(f"bwc-sim bench-mcu: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _ignore_stop_signals()  # stopping already: a second SIGTERM must not skip the clean-up
        if args.link is not None and args.link.is_symlink() and str(args.link.readlink()) == path:
            args.link.unlink()
        os.close(master)
        os.close(slave)
    return EXIT_OK


def random_boot_id() -> int:
    """A random non-zero u32 boot id from the OS's entropy: two boots never share one by seed."""
    return random.SystemRandom().randrange(1, 1 << 32)


def point_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: a reader sees the old target or the new one."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)


async def _mcu_main(mcu: FakeMcu, plan: list[TimedInput] | None) -> None:
    mcu.on_input = _print_input
    work: list[Coroutine[Any, Any, None]] = [
        mcu.run(),
        FrameLog(json_lines=False).print_events(mcu.events(), "host"),
        # Scenario mode is meant to run unattended: only `quit` or a signal ends it.
        _console(
            Role.MCU,
            functools.partial(_mcu_command, mcu),
            lambda _kind, text: say(text),
            quit_on_eof=plan is None,
        ),
    ]
    if plan is not None:
        work.append(_play(mcu, plan))
    await _until_quit(work)


def _print_input(message: SerialMessage, seq: int | None) -> None:
    t_ms = getattr(message, "t_ms", 0)
    if seq is None:
        say(f"queued {describe(message)} t_ms={t_ms} (no host connected yet)")
    else:
        say(f"sent {describe(message)} t_ms={t_ms} seq={seq}")


async def _play(mcu: FakeMcu, plan: list[TimedInput]) -> None:
    await mcu.connected.wait()
    say("scenario started")
    start = mcu.shell.clock()
    for timed in plan:
        await asyncio.sleep(max(0.0, start + timed.at_s - mcu.shell.clock()))
        mcu.send_input(mcu.stamp(timed.message))
    say("scenario done")


async def _mcu_command(mcu: FakeMcu, command: Command) -> str:
    """Run one MCU console command; the text after ``ok``."""
    if isinstance(command, GestureCommand):
        await mcu.gesture(command.gesture, command.button, hold_s=command.hold_s)
        held = "" if command.hold_s is None else f" {command.hold_s:g}s"
        return f"{command.gesture} {command.button.name.lower()}{held}"
    if isinstance(command, SendCommand):
        mcu.send_input(mcu.stamp(command.message))
        return describe(command.message)
    return await _common(command, Role.MCU)


async def _host_command(shell: LinkShell, command: Command) -> str:
    """Run one bench console command; the text after ``ok``."""
    if isinstance(command, SendCommand):
        if not shell.connected.is_set():
            raise CommandError("no MCU connected yet; wait for the 'connected' line")
        return f"{describe(command.message)} seq={shell.send(command.message)}"
    return await _common(command, Role.HOST)


async def _common(command: Command, side: Role) -> str:
    """Run wait, help or quit (which raises ``_Quit`` once answered)."""
    if isinstance(command, WaitCommand):
        await asyncio.sleep(command.seconds)
        return f"wait {command.seconds:g}"
    if isinstance(command, HelpCommand):
        return "help\n" + "\n".join(f"  {line}" for line in usage(side).splitlines())
    assert isinstance(command, QuitCommand), command  # the sides' commands are run by them
    raise _Quit


async def _console(
    side: Role,
    execute: Callable[[Command], Awaitable[str]],
    reply: Callable[[str, str], None],
    *,
    quit_on_eof: bool,
) -> None:
    """Read commands from stdin and run them one at a time, answering ``ok`` or ``error:``.

    A bad line is answered and skipped. The end of stdin quits if ``quit_on_eof``, unless stdin
    is /dev/null (a background job has no console: it serves until a signal).
    """
    lines = stdin_lines()
    while (line := await lines.get()) is not None:
        try:
            command = parse_command(line, side)
            if command is not None:
                reply("ok", f"ok {await execute(command)}")
        except _Quit:
            reply("ok", "ok quit")
            raise
        except (CommandError, LocalProtocolError) as exc:
            reply("error", f"error: {exc}")
    if quit_on_eof and not _stdin_is_null():
        print("bwc-sim: end of input, quitting", file=sys.stderr, flush=True)
        raise _Quit


def _stdin_is_null() -> bool:
    """Whether stdin is /dev/null or alike (a character device that is not a terminal)."""
    try:
        return stat.S_ISCHR(os.fstat(0).st_mode) and not os.isatty(0)
    except OSError:
        return True


class _Quit(Exception):  # noqa: N818 - a signal between tasks, not an error
    """Raised by a task to end the console cleanly."""


async def _until_quit(work: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` until one raises ``_Quit`` or SIGINT/SIGTERM arrives.

    A ``HardwareError`` (the port failed) is raised as itself, not in an exception group.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def stopper() -> None:
        await stop.wait()
        raise _Quit

    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in [*work, stopper()]:
                group.create_task(coroutine)
    except* _Quit:
        _ignore_stop_signals()
    except* HardwareError as failed:
        raise failed.exceptions[0] from None


def _ignore_stop_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def stdin_lines() -> asyncio.Queue[str | None]:
    """Lines of stdin, then None at its end, read by a daemon thread (a file, a pipe, a tty).

    Plain ``os.read`` in a daemon thread: it holds no lock of ``sys.stdin`` that interpreter
    shutdown would wait for, and never changes the terminal's blocking mode.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        pending = b""
        while chunk := _read_stdin():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                put(line.decode("utf-8", "replace"))
        if pending:
            put(pending.decode("utf-8", "replace"))
        put(None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue


def _read_stdin() -> bytes:
    try:
        return os.read(0, 4096)
    except OSError:
        return b""


# -- bench (host console) -----------------------------------------------------------------------


def run_host(args: argparse.Namespace) -> int:
    """Run the console on ``--port`` until quit; exit code."""
    try:
        return asyncio.run(_host_main(args))
    except HardwareError as exc:
        print(f"bwc-sim bench: port lost: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _host_main(args: argparse.Namespace) -> int:
    try:
        port = await open_byte_link(args.port, baudrate=args.baud)
    except HardwareError as exc:
        return _fail("bench", exc)
    log = FrameLog(json_lines=args.json)
    link = SerialLink(Role.HOST, Capability(0), random_boot_id(), HOST_FIRMWARE)
    shell = LinkShell(link, port, tap=log.tap)
    log.emit("opened", f"opened {port.description}")
    try:
        await _until_quit(
            [
                shell.run(),
                log.print_events(shell.events(), "mcu"),
                _console(
                    Role.HOST, functools.partial(_host_command, shell), log.emit, quit_on_eof=True
                ),
            ]
        )
    finally:
        counters = dataclasses.asdict(link.counters)
        log.emit(
            "counters", "counters " + " ".join(f"{k}={v}" for k, v in counters.items()), **counters
        )
        await port.close()
    return EXIT_OK
