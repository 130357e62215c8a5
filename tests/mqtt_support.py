"""Shared MQTT test support: a private mosquitto per test, and waiting helpers.

``tests/conftest.py`` registers this module as a plugin, so any test can take the ``mosquitto``
fixture as a parameter without importing it.

Every test gets its own mosquitto on a free 127.0.0.1 port (never the system broker on 1883),
with persistence in a temporary directory, stopped at teardown. The fixture skips only when the
mosquitto binary is absent; CI installs it, so there the skip never happens.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
import pytest_asyncio

from sim.broker import PrivateBroker

T = TypeVar("T")

BROKER_START_TIMEOUT_S = 10.0
"""How long a test waits for mosquitto to accept connections."""


@pytest_asyncio.fixture
async def mosquitto() -> AsyncIterator[PrivateBroker]:
    """A started private mosquitto (``.url``, ``.port``, ``stop()``, ``start()``, ``kill()``)."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto binary not found on PATH (apt-get install mosquitto)")
    async with PrivateBroker(kind="mosquitto", start_timeout_s=BROKER_START_TIMEOUT_S) as broker:
        yield broker


async def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_s: float = 5.0,
    what: str = "condition",
    poll_s: float = 0.005,
) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout_s``.

    For state with no event to wait on; prefer ``wait_for`` with an ``asyncio.Event`` when one
    exists.
    """
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(poll_s)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


async def wait_for(awaitable: Awaitable[T], *, timeout_s: float = 5.0, what: str = "it") -> T:
    """Await ``awaitable`` (e.g. ``event.wait()``); fail the test naming ``what`` on timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
