"""aiomqtt's socket callbacks made safe: a socket is watched only while paho still holds it.

aiomqtt 2.5 registers the event loop's reader and writer for paho's socket from callbacks that
paho may call in aiomqtt's executor thread (the one running ``connect()``), so it defers the
registration to the loop, with no check that the socket is still the one paho holds by then;
and a timed-out CONNACK or disconnect leaves the socket open for paho's next ``connect()`` to
close from that thread. ``SocketGuardedClient`` replaces those callbacks (``_on_socket_open``,
``_on_socket_register_write``, ``_client_connect``) and adds ``drop_socket()``, which closes the
socket on the loop's thread. ``device.mqtt.client.DeviceClient`` builds on it;
``tests/test_mqtt_disconnect.py`` and ``tests/test_mqtt_timeouts.py`` reproduce each race.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.types import PahoSocket


class SocketGuardedClient(aiomqtt.Client):
    """An ``aiomqtt.Client`` whose loop registrations follow the socket paho holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Guards the hand-over between paho's connect() in aiomqtt's executor thread and
        # drop_socket() on the loop's thread; held only to read or set the three flags.
        self._connect_guard = threading.Lock()
        self._connect_started = False
        self._connect_returned = False
        self._dropped = False

    def _on_socket_open(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ARG002 - paho's callback signature
        sock: PahoSocket,
    ) -> None:
        # Replaces aiomqtt's, which defers ``loop.add_reader`` and the misc task with no check,
        # as its add_writer did (below): paho calls this from aiomqtt's executor thread, and by
        # the time the loop runs the deferred call paho may have closed that socket (a dropped
        # client) and the descriptor may be another socket's. Watch only the socket paho holds.
        fd = sock.fileno()

        def watch() -> None:
            if client.socket() is sock:
                self._loop.add_reader(fd, self._read_ready, client)
                self._misc_task = self._loop.create_task(self._misc_loop())

        self._on_loop(watch)

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` now on the loop's thread; from another thread, on the loop, later."""
        if _runs_on_this_thread(self._loop):
            action()
        else:
            self._loop.call_soon_threadsafe(action)

    def _read_ready(self, client: paho.Client) -> None:
        """Bytes to read: let paho read them (aiomqtt's reader callback, unchanged)."""
        try:
            while True:
                client.loop_read()
                # A TLS socket may hold decoded bytes that select() does not report.
                sock = client._sock
                if sock is None or not (hasattr(sock, "pending") and sock.pending() > 0):
                    break
        except Exception as exc:  # noqa: BLE001 - as aiomqtt: a failed read ends the connection
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _on_socket_register_write(
        self,
        client: paho.Client,
        userdata: Any,  # noqa: ARG002 - paho's callback signature
        sock: PahoSocket,
    ) -> None:
        # Replaces aiomqtt's, which always defers ``loop.add_writer`` (``call_soon_threadsafe``,
        # as paho may call it from the executor thread running ``connect()``), while aiomqtt's
        # ``_on_socket_unregister_write`` removes the writer at once and paho then closes the
        # socket (``paho.Client._sock_close``). When paho queued a packet and closed the socket
        # in the same loop pass (a publisher ran, then the reader found the connection dropped
        # by the broker), the late add_writer met a closed descriptor (asyncio logged EBADF, one
        # per client) or one already reused by another socket. So: on the loop's thread, watch
        # at once, in step with paho's ``_registered_write``; from another thread, later, and
        # only if paho still wants this very socket watched.
        fd = sock.fileno()

        def watch() -> None:
            if client.socket() is sock and client._registered_write:
                self._loop.add_writer(fd, self._write_ready, client)

        self._on_loop(watch)

    def _write_ready(self, client: paho.Client) -> None:
        """The socket takes bytes again: let paho write (aiomqtt's writer callback, unchanged)."""
        try:
            client.loop_write()
        except Exception as exc:  # noqa: BLE001 - as aiomqtt: a failed write ends the connection
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _client_connect(self) -> None:
        # Runs in aiomqtt's executor thread. A client dropped meanwhile (its connect was
        # cancelled) must not open a socket, or must have the one it opened closed.
        try:
            if self._note_connect(returned=False):
                raise OSError("the connection attempt was abandoned")
            super()._client_connect()
        finally:
            if self._note_connect(returned=True):
                self._loop.call_soon_threadsafe(self._close_socket)

    def _note_connect(self, *, returned: bool) -> bool:
        """Record that paho's connect() started or returned; whether the client was dropped."""
        with self._connect_guard:
            if returned:
                self._connect_returned = True
            else:
                self._connect_started = True
            return self._dropped

    def drop_socket(self) -> None:
        """Close paho's socket, on the loop's thread, once the client is done with.

        A timed-out CONNACK or disconnect leaves the socket open, and aiomqtt never closes it:
        paho's next ``connect()`` would, from aiomqtt's executor thread, and aiomqtt's callbacks
        would then remove the loop's reader and writer from that thread (not thread-safe: it
        raced the loop's own reads, "Bad file descriptor"). If paho is connecting in that thread
        right now, its socket is closed here when it returns.
        """
        with self._connect_guard:
            self._dropped = True
            connecting = self._connect_started and not self._connect_returned
        if not connecting:
            self._close_socket()
        if self._disconnected.done() and not self._disconnected.cancelled():
            # Why the connection ended was seen by the pump (aiomqtt's __aexit__ returns early
            # without looking); marks it retrieved so asyncio does not log it as lost.
            self._disconnected.exception()

    def _close_socket(self) -> None:
        # paho's _sock_close calls aiomqtt's unregister-write and socket-close callbacks (they
        # remove the writer and reader, and cancel the misc task), then closes the socket.
        self._client._sock_close()


def _runs_on_this_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the loop running in the calling thread (not aiomqtt's executor)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        return False
