"""A real bench board's side of the serial bench link: opt-in, skipped unless a port is given.

``BWC_BENCH_PORT=URL`` (a ``/dev/serial/by-id/...`` path, ``/dev/ttyACM0``, ``socket://...``)
runs the conformance checks: handshake, capabilities, heartbeats, every announced output
acknowledged, a clean line. ``BWC_BENCH_INTERACTIVE=1`` (with ``pytest -s``) adds the inputs,
done by the person at the bench when prompted. ``BWC_BENCH_BAUD`` sets the baud rate (115200).
The same file runs against the fake microcontroller (``bwc-sim bench-mcu --pty --link PATH``),
which is how it is checked without hardware (docs/bench.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from device.backends.events import (
    BackendEvent,
    ButtonInput,
    DisplayOutput,
    HapticOutput,
    LedOutput,
    LineInput,
    LinkDownEvent,
    Output,
    ToneOutput,
)
from device.backends.serial import SerialBackend

PORT = os.environ.get("BWC_BENCH_PORT")
INTERACTIVE = os.environ.get("BWC_BENCH_INTERACTIVE") == "1"
BAUD = int(os.environ.get("BWC_BENCH_BAUD", "115200"))
RETRY_SPAN_S = 2.0
"""Longer than a reliable frame's whole retry span (6 transmissions, 250 ms apart)."""
HUMAN_S = 30.0

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.timeout(180),
    pytest.mark.skipif(PORT is None, reason="set BWC_BENCH_PORT to a bench board's port"),
]

OUTPUTS: dict[str, list[Output]] = {
    "leds": [LedOutput(0, (0, 255, 0), "solid"), LedOutput(0, (0, 0, 0), "off")],
    "tone": [ToneOutput(2000, 0.1, 2)],
    "haptic": [HapticOutput(1, 0.2)],
    "display": [DisplayOutput("BENCH"), DisplayOutput("")],
}


@pytest_asyncio.fixture
async def board() -> AsyncIterator[SerialBackend]:
    """The board on ``BWC_BENCH_PORT``, handshaken (``open`` raises a clear error otherwise)."""
    assert PORT is not None
    backend = SerialBackend(PORT, baudrate=BAUD)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def _collect(backend: SerialBackend, seconds: float) -> list[BackendEvent]:
    """Every event within an observation window (the window is the test: nothing may go wrong)."""
    seen: list[BackendEvent] = []

    async def gather() -> None:
        async for event in backend.events():
            seen.append(event)  # noqa: PERF401 (the window ends by timeout: keep what came)

    try:
        async with asyncio.timeout(seconds):
            await gather()
    except TimeoutError:
        pass
    return seen


async def _next_input(
    backend: SerialBackend, wanted: Callable[[BackendEvent], bool], what: str
) -> BackendEvent:
    async with asyncio.timeout(HUMAN_S):
        async for event in backend.events():
            if wanted(event):
                return event
    raise AssertionError(f"the board's event stream ended before {what}")


def _ask(text: str) -> None:
    print(f"\n>>> {text} (within {HUMAN_S:.0f} s)", file=sys.__stderr__, flush=True)


async def test_the_board_handshakes_and_announces_what_it_has(board: SerialBackend) -> None:
    assert board.capabilities, "the board's Hello announced no capabilities"
    assert board.counters()["version_mismatches"] == 0


async def test_heartbeats_keep_the_link_up_on_a_clean_line(board: SerialBackend) -> None:
    before = board.counters()
    events = await _collect(board, 5.0)
    after = board.counters()
    assert not [e for e in events if isinstance(e, LinkDownEvent)], events
    # At 1 Hz, a live board sends at least four heartbeats in five seconds.
    assert after["frames_received"] - before["frames_received"] >= 4
    for noise in ("crc_errors", "cobs_errors", "bytes_dropped"):
        assert after[noise] == before[noise], f"{noise} on a quiet line: check the cable and baud"


async def test_every_announced_output_is_acknowledged(board: SerialBackend) -> None:
    sent = 0
    for capability, outputs in OUTPUTS.items():
        if capability in board.capabilities:
            for output in outputs:
                await board.output(output)
                sent += 1
    if not sent:
        pytest.skip("the board announces no outputs")
    await _collect(board, RETRY_SPAN_S)
    counters = board.counters()
    for failure in ("delivery_failed", "naks_received", "outputs_dropped"):
        assert counters[failure] == 0, f"{failure}: {counters}"


@pytest.mark.skipif(not INTERACTIVE, reason="set BWC_BENCH_INTERACTIVE=1 and run with -s")
async def test_the_person_at_the_bench_presses_draws_and_switches(board: SerialBackend) -> None:
    _ask("double-press the Event button")
    edges: list[ButtonInput] = []
    while len(edges) < 4:
        event = await _next_input(
            board,
            lambda e: isinstance(e, ButtonInput) and e.button == "event",
            "a double press",
        )
        assert isinstance(event, ButtonInput)
        edges.append(event)
    assert [e.pressed for e in edges] == [True, False, True, False]
    times = [e.hw_time_s for e in edges]
    assert times == sorted(times), "edges out of order: the board's t_ms must be monotonic"
    assert times[2] - times[0] < 1.5, "the two presses were more than 1.5 s apart"
    steps = [
        ("holster", True, "draw the sidearm"),
        ("holster", False, "holster it"),
        ("lightbar", True, "switch the lightbar on"),
        ("lightbar", False, "switch it off"),
    ]
    for line, level, text in steps:
        _ask(text)
        event = await _next_input(board, _line_event(line), text)
        assert isinstance(event, LineInput)
        assert event.level is level, f"{line}: expected {level}, got {event.level}"


def _line_event(line: str) -> Callable[[BackendEvent], bool]:
    return lambda event: isinstance(event, LineInput) and event.line == line
