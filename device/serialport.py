"""A byte link over any pyserial URL, for asyncio code that must not care what is behind it.

``open_byte_link(url)`` accepts what pyserial's ``serial_for_url`` accepts: a device path
(``/dev/ttyUSB0``, ``/dev/pts/3``, ``/dev/serial/by-id/...``, a symlink), ``socket://host:port``,
``rfc2217://host:port``, ``loop://``. Ports that have a file descriptor (device paths and
``socket://``) go through pyserial-asyncio-fast and the event loop; the others (``loop://``,
``rfc2217://`` and other pyserial URL handlers) through a reader thread behind the same
interface.

This is the boundary with pyserial: its exceptions are translated here into
``device.errors.HardwareError`` with a message a user can act on, and a port that vanishes under
us (a USB unplug, the other end of a pty closed) raises ``PortGone`` from ``read`` and ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Final

import serial  # type: ignore[import-untyped]
import serial_asyncio_fast

from device.errors import HardwareError

log = logging.getLogger(__name__)

_READ_SIZE: Final = 4096
_THREAD_POLL_S: Final = 0.05
"""How often the reader thread checks for ``close``: the longest ``close`` waits for it."""

# Errors a port can raise once open: pyserial's (an OSError subclass) and the OS's own.
_PORT_ERRORS: Final = (serial.SerialException, OSError)


class PortGone(HardwareError):  # noqa: N818 - the name other modules code against
    """The port vanished or was closed under us (USB unplug, peer pty closed, socket reset)."""


class ByteLink(ABC):
    """An open byte stream to a serial port: read what arrives, write what must leave."""

    description: str
    """The URL the link was opened on, for messages and logs."""

    @abstractmethod
    async def read(self) -> bytes:
        """Wait for at least one byte and return what has arrived; raise ``PortGone``."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Write ``data`` (waiting while the port's buffer is full); raise ``PortGone``."""

    @abstractmethod
    async def close(self) -> None:
        """Release the port. Safe to call twice and after ``PortGone``."""


async def open_byte_link(url: str, *, baudrate: int = 115200) -> ByteLink:
    """Open the serial port at ``url``; raise ``HardwareError`` saying what to do if it fails."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    try:
        if scheme in ("", "socket"):
            return await _open_streams(url, baudrate, device=not scheme)
        return await _open_threaded(url, baudrate)
    except (*_PORT_ERRORS, ValueError, LookupError) as error:
        raise open_error(url, error) from error


def open_error(url: str, error: BaseException) -> HardwareError:
    """The ``HardwareError`` to raise when opening ``url`` failed with ``error``.

    pyserial reports every failure as ``SerialException``; the errno it carries (when the OS gave
    one) tells a missing device from a permission problem or a port in use.
    """
    code = getattr(error, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return HardwareError(
            f"no serial port at {url}: is the device plugged in? see /dev/serial/by-id/ "
            f"for the names of the serial devices present"
        )
    if code in (errno.EACCES, errno.EPERM):
        return HardwareError(
            f"no permission to open serial port {url}: add your user to the group that owns it "
            f"(usually 'dialout': sudo usermod -aG dialout $USER, then log in again)"
        )
    # exclusive=True makes pyserial flock the port: a holder makes that fail with EAGAIN.
    if code == errno.EBUSY or "exclusively lock" in str(error):
        return HardwareError(f"serial port {url} is in use by another program; close it first")
    if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT):
        return HardwareError(f"cannot connect to serial port {url}: {error}; is the bridge up?")
    if isinstance(error, ValueError | LookupError):
        return HardwareError(
            f"bad serial port URL {url!r}: {error}; expected a device path, socket://host:port, "
            f"rfc2217://host:port or loop://"
        )
    return HardwareError(f"cannot open serial port {url}: {error}")


# -- ports with a file descriptor: pyserial-asyncio-fast --------------------------------------


async def _open_streams(url: str, baudrate: int, *, device: bool) -> ByteLink:
    # exclusive=True takes a flock on device ports: a second program on the same port would
    # garble both sides' frames, so it is told "in use" instead.
    options: dict[str, Any] = {"exclusive": True} if device else {}
    reader, writer = await serial_asyncio_fast.open_serial_connection(
        url=url, baudrate=baudrate, **options
    )
    return _StreamLink(url, reader, writer)


class _StreamLink(ByteLink):
    """A port driven by the event loop through pyserial-asyncio-fast's transport."""

    def __init__(self, url: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.description = url
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(_READ_SIZE)
        except _PORT_ERRORS as error:
            raise PortGone(f"serial port {self.description} is gone: {error}") from error
        if not data:
            raise PortGone(f"serial port {self.description} was closed")
        return data

    async def write(self, data: bytes) -> None:
        if self._writer.transport.is_closing():
            raise PortGone(f"serial port {self.description} was closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except _PORT_ERRORS as error:
            raise PortGone(f"serial port {self.description} is gone: {error}") from error

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._writer.transport
        # abort, not close: close() flushes (tcdrain), which blocks for ever on a port whose
        # other end stopped reading. A transport closed by an error is already on its way out.
        if not transport.is_closing():
            transport.abort()
        # The port closed with an error we already reported (or are about to, from read).
        with contextlib.suppress(*_PORT_ERRORS):
            await self._writer.wait_closed()


# -- ports without one (loop://, rfc2217://): a reader thread ----------------------------------


async def _open_threaded(url: str, baudrate: int) -> ByteLink:
    port = await asyncio.to_thread(
        serial.serial_for_url, url, baudrate=baudrate, timeout=_THREAD_POLL_S
    )
    link = _ThreadLink(url, port, asyncio.get_running_loop())
    link.start()
    return link


class _ThreadLink(ByteLink):
    """A port read by a thread that hands each chunk to the event loop.

    pyserial's URL handlers other than device paths and ``socket://`` have no file descriptor the
    loop could watch, so a thread does the blocking reads (with a short timeout, so that it
    notices ``close``); writes go through ``asyncio.to_thread``, one at a time to keep order.
    """

    def __init__(self, url: str, port: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.description = url
        self._port = port
        self._loop = loop
        self._chunks: asyncio.Queue[bytes | PortGone] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"serial reader {url}")
        self._write_lock = asyncio.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the reader thread."""
        self._thread.start()

    async def read(self) -> bytes:
        item = await self._chunks.get()
        if isinstance(item, PortGone):
            # Keep it queued: every later read must fail the same way.
            self._chunks.put_nowait(item)
            raise item
        return item

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise PortGone(f"serial port {self.description} was closed")
        async with self._write_lock:
            try:
                await asyncio.to_thread(self._port.write, data)
            except _PORT_ERRORS as error:
                raise PortGone(f"serial port {self.description} is gone: {error}") from error

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
        with contextlib.suppress(*_PORT_ERRORS):
            await asyncio.to_thread(self._port.close)
        self._chunks.put_nowait(PortGone(f"serial port {self.description} was closed"))

    def _pump(self) -> None:
        """Thread body: read until ``close`` or an error, handing chunks to the loop."""
        try:
            while not self._stop.is_set():
                data = self._port.read(max(1, min(self._port.in_waiting, _READ_SIZE)))
                if data:
                    self._hand_over(bytes(data))
        except Exception as error:  # supervisor of the thread: whatever it was, reading is over
            if not self._stop.is_set():
                log.debug("serial reader thread for %s stopped", self.description, exc_info=True)
                self._hand_over(PortGone(f"serial port {self.description} is gone: {error}"))

    def _hand_over(self, item: bytes | PortGone) -> None:
        try:
            self._loop.call_soon_threadsafe(self._chunks.put_nowait, item)
        except RuntimeError:
            # The loop is closed: nobody is left to read, so the thread just stops.
            self._stop.set()
