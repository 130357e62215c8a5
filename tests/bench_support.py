"""Support for the bench suite: the fake bench MCU as a child process, and what the camera decided.

``McuProcess`` runs ``bwc-sim bench-mcu --pty --link PATH ...`` as a child (its first stdout line
is the pty's path; the symlink points there by then), keeps every later line, and waits on them
with ``expect``; ``command`` answers a console command's ``ok ...`` or ``error: ...``. The
``mcu_children`` block starts them and SIGKILLs any still running at its end.

``decisions`` reads the camera's audit log into one readable line per decision (a trigger's
request and act, a mode change, a marker, a recording started or stopped), without times: the
sequence two runs of one scenario must agree on, whatever the hardware backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import pytest

from sim.runner import ScenarioRun
from sim.scenario import Scenario, parse_scenario
from tests.connected_support import Step, audit_records, child_env, scenario_text

T = TypeVar("T")

MCU_WAIT_S: Final = 20.0
"""Bound on a wait for an MCU line: a cold ``python -m sim.cli`` takes a second or two here."""


class McuProcess:
    """A running ``bwc-sim bench-mcu``: its pty, its stdout lines as they come, its stdin."""

    def __init__(self, process: asyncio.subprocess.Process, link: Path, pty: str) -> None:
        self.process = process
        self.link = link
        """The ``--link`` symlink, the port the camera opens."""
        self.pty = pty
        """The pty slave the MCU announced on its first line."""
        self.lines: list[str] = []
        """Every line printed after the first, in order."""
        self.errors: list[str] = []
        """Every line printed on stderr (read as it comes: a full pipe would stall the MCU)."""
        self._cursor = 0
        self._grown = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"bench-mcu {pty}")
        self._errors = asyncio.create_task(self._read_errors(), name=f"bench-mcu {pty} stderr")

    @classmethod
    async def start(cls, link: Path, *args: str) -> McuProcess:
        """Start ``bench-mcu --pty --link link *args``; return once it has announced its pty."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "sim.cli", "bench-mcu", "--pty", "--link", str(link), *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        assert process.stdout is not None
        first = await within(process.stdout.readline(), "bench-mcu to announce its pty")
        if not first.startswith(b"/dev/"):
            process.kill()
            _, err = await process.communicate()
            pytest.fail(f"bench-mcu did not start: {first!r} {err.decode()!r}")
        return cls(process, link, first.decode().strip())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._grown.set()

    async def _read_errors(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.errors.append(line.decode().rstrip("\n"))

    def send(self, *commands: str) -> None:
        """Write console commands to its stdin, one per line."""
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{command}\n" for command in commands).encode())

    async def expect(self, prefix: str | tuple[str, ...]) -> str:
        """The next line (after the last one expected) starting with ``prefix`` (or one of)."""
        try:
            async with asyncio.timeout(MCU_WAIT_S):
                while True:
                    for index in range(self._cursor, len(self.lines)):
                        if self.lines[index].startswith(prefix):
                            self._cursor = index + 1
                            return self.lines[index]
                    if self._reader.done():
                        break
                    self._grown.clear()
                    await self._grown.wait()
        except TimeoutError:
            pass
        pytest.fail(
            f"no bench-mcu line {prefix!r} (within {MCU_WAIT_S} s or before its exit); "
            f"last lines: {self.lines[-10:]}; stderr: {self.errors[-5:]}"
        )

    async def command(self, command: str) -> str:
        """Run one console command; its answer (``ok ...``), failing the test on ``error:``.

        Lines printed meanwhile (outputs from the host) are left for ``expect`` to find.
        """
        cursor = self._cursor
        self.send(command)
        answer = await self.expect(("ok ", "error: "))
        self._cursor = cursor
        assert answer.startswith("ok "), f"bench-mcu refused {command!r}: {answer}"
        return answer

    def displayed(self) -> list[str]:
        """The texts the host put on the display, in order (``display "REC"`` lines)."""
        return [
            str(json.loads(line.removeprefix("display ")))
            for line in self.lines
            if line.startswith('display "')
        ]

    async def stop(self, signum: int | None = None) -> int:
        """Send ``signum`` (None: ``quit`` on the console) and return the exit code."""
        if signum is None:
            self.send("quit")
        else:
            self.process.send_signal(signum)
        code = await within(self.process.wait(), "bench-mcu to exit")
        await within(self._reader, "bench-mcu's output to end")
        await within(self._errors, "bench-mcu's stderr to end")
        return code

    async def kill(self) -> None:
        """SIGKILL, if still running (the end of a test)."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        self._errors.cancel()


class StartMcu(Protocol):
    """Starts a ``bench-mcu`` child with these arguments (on the test's link by default)."""

    def __call__(self, *args: str, link: Path | None = None) -> Awaitable[McuProcess]: ...


@contextlib.asynccontextmanager
async def mcu_children(tmp_path: Path) -> AsyncIterator[StartMcu]:
    """A starter of ``bench-mcu`` children on ``tmp_path/ttyBENCH`` (``link=`` for another);
    any still running at the end of the block are SIGKILLed (the ``bench_mcu`` fixture)."""
    started: list[McuProcess] = []

    async def start(*args: str, link: Path | None = None) -> McuProcess:
        mcu = await McuProcess.start(link or tmp_path / "ttyBENCH", *args)
        started.append(mcu)
        return mcu

    try:
        yield start
    finally:
        for mcu in started:
            await mcu.kill()


async def within(awaitable: Awaitable[T], what: str, timeout_s: float = MCU_WAIT_S) -> T:
    """``awaitable``'s result; the test fails naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


# -- scenarios and decisions --------------------------------------------------------------------


def write_scenario(path: Path, steps: Iterable[Step], *, duration: float) -> Scenario:
    """Write the scenario file both the camera and the bench MCU read; return it parsed."""
    text = scenario_text(steps, duration=duration)
    path.write_text(text)
    return parse_scenario(text, str(path))


def _outcome(accepted: object) -> str:
    return "accepted" if accepted else "refused"


def _decision(record: Mapping[str, Any]) -> str | None:
    match record["kind"]:
        case "trigger":
            said = f" ({record['stated_reason']})" if record.get("stated_reason") else ""
            act = record.get("act") or _outcome(record["accepted"])
            return f"{record['request']} {record['trigger']}{said} -> {act}"
        case "mode":
            switch = "on" if record["enabled"] else "off"
            return f"mode {record['mode']} {switch} -> {_outcome(record['accepted'])}"
        case "marker":
            return f"marker -> {_outcome(record['accepted'])}"
        case "recording_started":
            return f"recording started by {record['trigger']}"
        case "recording_stopped":
            return f"recording stopped by {record['trigger']}: {record['reason']}"
    return None


def decisions(data_dir: Path) -> list[str]:
    """What the camera decided, in audit-log order, one readable line each, without times."""
    found = (_decision(record) for record in audit_records(data_dir))
    return [decision for decision in found if decision is not None]


def virtual_decisions(plan: Scenario, out: Path) -> list[str]:
    """``decisions`` of ``plan`` played in virtual time (no daemon, no hardware backend)."""
    ScenarioRun(plan, out).run()
    return decisions(out)


def button_anomalies(data_dir: Path) -> list[str]:
    """Why the camera ignored Event button edges, other than contact bounce: a press or a
    release it never saw, a press and release squeezed into the debounce time."""
    return [
        f"{r['mono_s']:.3f} s: {r['reason']}"
        for r in audit_records(data_dir)
        if r["kind"] == "input_ignored"
        and r["input"] == "event_button"
        and r["reason"] != "contact bounce"
    ]


def hardware_links(data_dir: Path) -> list[tuple[str, object]]:
    """The camera's ``hardware_link`` records: ``("up", rebooted)`` or ``("down", reason)``."""
    return [
        (r["state"], r["rebooted"] if r["state"] == "up" else r["reason"])
        for r in audit_records(data_dir)
        if r["kind"] == "hardware_link"
    ]


def counters_of(message: Mapping[str, Any]) -> dict[str, int]:
    """The ``counters`` of a telemetry message."""
    counters: dict[str, int] = message.get("counters", {})
    return counters
