"""``device.serialport``: one ByteLink over a real pty, ``loop://`` (the reader thread),
``socket://``, and errors a user can act on (missing port, permission, bad URL, vanished port)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from device.errors import HardwareError
from device.serialport import ByteLink, PortGone, open_byte_link, open_error

TIMEOUT_S = 5.0


async def read_exactly(link: ByteLink, size: int) -> bytes:
    """Read until ``size`` bytes have arrived (a serial read returns what is there)."""
    data = b""
    async with asyncio.timeout(TIMEOUT_S):
        while len(data) < size:
            data += await link.read()
    return data


@contextlib.contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A raw pty: the master fd (the "device") and the slave's path (the port to open)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


async def read_master(master: int, size: int) -> bytes:
    """Read ``size`` bytes from a pty master without blocking the loop."""
    loop = asyncio.get_running_loop()
    data = b""
    ready = asyncio.Event()
    loop.add_reader(master, ready.set)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while len(data) < size:
                await ready.wait()
                ready.clear()
                data += os.read(master, size - len(data))
    finally:
        loop.remove_reader(master)
    return data


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[ByteLink]:
    link = await open_byte_link(url)
    try:
        yield link
    finally:
        await link.close()


# -- ports with a file descriptor ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_pty_bytes_flow_both_ways() -> None:
    with pty_pair() as (master, path):
        async with opened(path) as link:
            assert link.description == path
            os.write(master, b"\x00from the mcu\x00")
            assert await read_exactly(link, 14) == b"\x00from the mcu\x00"
            await link.write(b"to the mcu")
            assert await read_master(master, 10) == b"to the mcu"


@pytest.mark.asyncio
async def test_a_symlink_to_the_port_works(tmp_path: Path) -> None:
    with pty_pair() as (master, path):
        alias = tmp_path / "usb-bench-if00"
        alias.symlink_to(path)
        async with opened(str(alias)) as link:
            os.write(master, b"abc")
            assert await read_exactly(link, 3) == b"abc"


@pytest.mark.asyncio
async def test_a_closed_master_is_port_gone_for_read_and_write() -> None:
    with pty_pair() as (master, path):
        async with opened(path) as link:
            os.close(master)
            with pytest.raises(PortGone, match=r"gone|closed"):
                async with asyncio.timeout(TIMEOUT_S):
                    await link.read()
            with pytest.raises(PortGone):
                await link.write(b"anyone there?")
            await link.close()  # twice: the context manager closes again


@pytest.mark.asyncio
async def test_socket_url_goes_through_the_event_loop() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, opened(f"socket://127.0.0.1:{port}") as link:
        await link.write(b"hello")
        assert await read_exactly(link, 5) == b"hello"
        # The bridge hung up: the next read reports the port gone, not an empty chunk.
        with pytest.raises(PortGone):
            async with asyncio.timeout(TIMEOUT_S):
                await link.read()


# -- ports without one: the reader thread -------------------------------------------------------


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("serial reader")]


@pytest.mark.asyncio
async def test_loop_url_goes_through_the_reader_thread() -> None:
    link = await open_byte_link("loop://")
    try:
        assert reader_threads()
        payload = bytes(range(256)) * 4
        await link.write(payload)
        assert await read_exactly(link, len(payload)) == payload
    finally:
        await link.close()
    # The thread stopped with close(), and the link says so from then on.
    assert not reader_threads()
    with pytest.raises(PortGone):
        await link.read()
    with pytest.raises(PortGone):
        await link.write(b"x")
    await link.close()


# -- errors a user can act on -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_missing_port_says_to_plug_the_device_in() -> None:
    with pytest.raises(HardwareError, match=r"no serial port at /dev/ttyUSB_bwc_absent: is the"):
        await open_byte_link("/dev/ttyUSB_bwc_absent")


@pytest.mark.asyncio
async def test_a_port_already_open_is_in_use() -> None:
    with pty_pair() as (_, path):
        async with opened(path):
            with pytest.raises(HardwareError, match="in use by another program"):
                await open_byte_link(path)


@pytest.mark.asyncio
async def test_dangling_symlink_is_a_missing_port(tmp_path: Path) -> None:
    alias = tmp_path / "bench"
    alias.symlink_to(tmp_path / "gone")
    with pytest.raises(HardwareError, match=r"/dev/serial/by-id/"):
        await open_byte_link(str(alias))


def _unwritable_port() -> str | None:
    """A path whose opening for read-write fails with EACCES, or None if there is none here.

    As a normal user that is a pty chmod-ed to 000 (made by the caller). Root bypasses file
    modes, but not sysfs: a read-only attribute refuses O_RDWR even to root.
    """
    for candidate in ("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "/sys/power/state"):
        try:
            fd = os.open(candidate, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except PermissionError:
            return candidate
        except OSError:
            continue
        os.close(fd)
    return None


@pytest.mark.asyncio
async def test_permission_denied_mentions_the_dialout_group() -> None:
    with pty_pair() as (_, path):
        target: str | None = path
        if os.geteuid() == 0:
            target = _unwritable_port()
            if target is None:
                pytest.skip("running as root and no read-only sysfs file to stand in for a port")
        else:
            Path(path).chmod(0)
        assert target is not None
        with pytest.raises(HardwareError, match=r"no permission .*dialout"):
            await open_byte_link(target)


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["foo://bar", "loop://?logging=shouting"])
async def test_bad_url_names_the_accepted_forms(url: str) -> None:
    with pytest.raises(HardwareError, match=r"bad serial port URL .*socket://host:port"):
        await open_byte_link(url)


@pytest.mark.asyncio
async def test_refused_socket_bridge() -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(HardwareError, match="cannot connect"):
        await open_byte_link(f"socket://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOENT, "is the device plugged in"),
        (errno.EACCES, "dialout"),
        (errno.EPERM, "dialout"),
        (errno.EBUSY, "in use by another program"),
        (errno.EIO, "cannot open serial port /dev/x"),
    ],
)
def test_open_errors_by_errno(code: int, words: str) -> None:
    error = open_error("/dev/x", OSError(code, os.strerror(code)))
    assert isinstance(error, HardwareError)
    assert words in str(error)
