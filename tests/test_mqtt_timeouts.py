"""Connect and disconnect timeouts: a link retries until it connects, and leaves no socket behind.

Each test puts a ``GateBroker`` between the link and its private mosquitto: a TCP server of our
own that accepts and then stays silent (never a CONNACK), answers late (forwards to mosquitto
after a delay), stops reading after the CONNACK, or simply forwards. With aiomqtt's client reused
across attempts, a timed-out CONNACK left paho's socket open for paho's next ``connect()`` to
close from aiomqtt's executor thread (the loop's reader was removed from that thread), a closed
link leaked that socket, and a timed-out disconnect left aiomqtt's lock held so every later
attempt failed "reusable, but not reentrant".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio

from device.mqtt import Backoff, MqttLink, Presence, parse_broker_url
from device.mqtt.client import make_client, translated_connect
from device.mqtt.errors import ConnectFailed
from sim.broker import PrivateBroker
from tests.mqtt_support import wait_for, wait_until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

TIMEOUT_S = 0.3
FAST = Backoff(base_s=0.02, cap_s=0.1, stable_after_s=5.0)
Mode = Literal["silent", "late", "stall", "forward"]


class GateBroker:
    """A TCP front for ``upstream`` whose behaviour for new connections is ``mode``.

    ``silent``: read and drop everything. ``late``: forward after ``late_s``. ``stall``: forward
    the first chunk (the CONNECT) and the answers, then read nothing more. ``forward``: a proxy.
    """

    def __init__(self, upstream: PrivateBroker, mode: Mode, *, late_s: float = 0.0) -> None:
        self.upstream = upstream
        self.mode: Mode = mode
        self.late_s = late_s
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    async def __aenter__(self) -> GateBroker:
        listener = socket.socket()
        # A small receive buffer (no autotuning): a stalled connection fills up quickly.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._serve, sock=listener)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._closed.set()
        for writer in self._writers:
            writer.close()
        # Wait for the handlers to close their upstream connections: one left to the garbage
        # collector after the loop closed warned (ResourceWarning) inside a later test.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        self._writers.add(writer)
        self.accepted += 1
        mode = self.mode
        try:
            if mode == "silent":
                while await reader.read(65536):
                    pass
                return
            if mode == "late":
                await asyncio.sleep(self.late_s)
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream.host, self.upstream.port
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pipe(reader, up_writer, stall=mode == "stall"))
                    tg.create_task(self._pipe(up_reader, writer, stall=False))
            finally:
                up_writer.close()
        except (OSError, ExceptionGroup):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, stall: bool
    ) -> None:
        try:
            while not self._closed.is_set() and (data := await src.read(65536)):
                dst.write(data)
                await dst.drain()
                if stall:
                    await self._closed.wait()  # read nothing more: the peer's sends back up
        finally:
            dst.close()


class LoopWatch:
    """Which reader/writer registrations of the running loop were changed off its thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.off_thread: list[str] = []
        self.loop_errors: list[str] = []
        self._loop_thread = threading.get_ident()
        for name in ("add_reader", "remove_reader", "add_writer", "remove_writer"):
            setattr(loop, name, self._watched(name, getattr(loop, name)))

    def _watched(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any) -> Any:
            if threading.get_ident() != self._loop_thread:
                self.off_thread.append(name)
            return method(*args)

        return watched

    def loop_exception(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")


@pytest_asyncio.fixture
async def loop_watch() -> AsyncIterator[LoopWatch]:
    loop = asyncio.get_running_loop()
    watch = LoopWatch(loop)
    loop.set_exception_handler(watch.loop_exception)
    try:
        yield watch
    finally:
        loop.set_exception_handler(None)
        for name in ("add_reader", "remove_reader", "add_writer", "remove_writer"):
            with contextlib.suppress(AttributeError):
                delattr(loop, name)


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def link_to(
    gate: GateBroker,
    device: str,
    *,
    online: bytes = b"on",
    timeout_s: float = TIMEOUT_S,
    subscribe: bool = True,
) -> MqttLink:
    settings = parse_broker_url(gate.url, connect_timeout_s=timeout_s, backoff=FAST)
    return MqttLink(
        settings,
        client_id=device,
        presence=Presence(f"bwc/v1/dev/{device}/status", online, b"off"),
        rng=random.Random(device),
        subscriptions=(f"bwc/v1/dev/{device}/cmd",) if subscribe else (),
    )


@pytest.mark.parametrize("mode", ["silent", "late"])
async def test_links_retry_timed_out_connects_until_the_broker_answers(
    mosquitto: PrivateBroker, loop_watch: LoopWatch, mode: Mode
) -> None:
    async with GateBroker(mosquitto, mode, late_s=TIMEOUT_S * 1.5) as gate:
        links = [link_to(gate, f"cam-{i:03d}") for i in range(8)]
        async with asyncio.TaskGroup() as tg:
            for link in links:
                tg.create_task(link.run())
            await wait_until(lambda: gate.accepted >= 4 * len(links), what="timed-out attempts")
            assert not any(link.connected.is_set() for link in links)
            gate.mode = "forward"
            await wait_for(
                asyncio.gather(*(link.connected.wait() for link in links)),
                timeout_s=20,
                what="every link to connect once the broker answers",
            )
            await asyncio.gather(*(link.close() for link in links))
    assert loop_watch.off_thread == []
    assert loop_watch.loop_errors == []


async def test_a_link_closed_after_timed_out_connects_leaves_no_socket_open(
    mosquitto: PrivateBroker, loop_watch: LoopWatch
) -> None:
    async with GateBroker(mosquitto, "silent") as gate:
        before = open_fds()
        link = link_to(gate, "cam-001")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(link.run())
            await wait_until(lambda: gate.accepted >= 5, what="timed-out attempts")
            await link.close()
        # Both ends count: the gate closes its side once the link's socket is closed.
        await wait_until(lambda: open_fds() <= before, what="every socket to be closed")
    assert loop_watch.loop_errors == []


async def test_a_timed_out_disconnect_neither_leaks_nor_stops_the_link() -> None:
    # The retained online status (4 MiB here) stands in for a send backlog, as an upload in
    # flight makes one: the gate stops reading after the CONNACK, the status (sent first: no
    # subscriptions) waits for its
    # PUBACK until the timeout, and the DISCONNECT then queues behind the unsent bytes until
    # aiomqtt's disconnect times out too. The same client, entered again, raised "reusable,
    # but not reentrant" at every later attempt; and its socket stayed open.
    async with PrivateBroker(kind="mosquitto", max_packet_size=None) as broker:
        before = open_fds()
        errors: list[str] = []
        async with GateBroker(broker, "stall") as gate:
            link = link_to(gate, "cam-001", online=b"x" * (4 << 20), timeout_s=1.0, subscribe=False)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.run())
                await wait_until(
                    lambda: link.last_error is not None, timeout_s=15, what="a failed attempt"
                )
                gate.mode = "forward"
                try:
                    async with asyncio.timeout(15):
                        while not link.connected.is_set():
                            errors.append(repr(link.last_error))
                            await asyncio.sleep(0.05)
                except TimeoutError:
                    pytest.fail(f"the link never connected again: {sorted(set(errors))}")
                await link.close()
        assert not any("reentrant" in error for error in errors)
        # The gate has closed its sides (a stalled one never reads the link's goodbye).
        await wait_until(lambda: open_fds() <= before, what="every socket to be closed")


async def test_a_socket_closed_before_the_deferred_add_reader_is_never_watched(
    mosquitto: PrivateBroker, loop_watch: LoopWatch
) -> None:
    # paho calls on_socket_open from aiomqtt's executor thread; the reader is added later, on
    # the loop. If paho has closed that socket by then, it must not be watched (aiomqtt's
    # add_reader met the closed descriptor, or another socket's reusing its number).
    client = make_client(
        mosquitto.settings(),
        client_id="cam-001",
        will_topic="bwc/v1/dev/cam-001/status",
        will_payload=b"off",
        max_inflight=20,
    )
    sock, other = socket.socketpair()
    other.close()

    def open_then_close() -> None:  # paho's side, with the loop blocked meanwhile
        client._on_socket_open(client._client, None, sock)
        sock.close()

    thread = threading.Thread(target=open_then_close)
    thread.start()
    thread.join()
    await asyncio.sleep(0.05)  # the deferred add_reader has run
    assert loop_watch.loop_errors == []


@pytest.mark.parametrize(("protocol", "hint"), [("5", "try --mqtt 3.1.1"), ("3.1.1", "overloaded")])
async def test_a_broker_that_never_answers_connect_is_reported_with_what_to_try(
    mosquitto: PrivateBroker, protocol: Literal["5", "3.1.1"], hint: str
) -> None:
    """A broker without MQTT 5 drops an MQTT 5 CONNECT unanswered: the error says what to try."""
    async with GateBroker(mosquitto, "silent") as gate:
        settings = parse_broker_url(gate.url, protocol=protocol, connect_timeout_s=TIMEOUT_S)
        client = make_client(
            settings, client_id="cam-001", will_topic="w", will_payload=b"", max_inflight=1
        )
        with pytest.raises(ConnectFailed, match=hint) as failed:
            async with translated_connect(client):
                pass
        assert "no CONNACK" in str(failed.value)


async def test_keepalive_checks_wake_at_paho_deadlines_and_still_end_a_dead_connection(
    mosquitto: PrivateBroker,
) -> None:
    """A connection whose broker stops answering ends a keepalive after the unanswered PINGREQ,
    and paho's checks wake at its deadlines, not every second as aiomqtt's do."""
    keepalive = 5
    async with GateBroker(mosquitto, "stall") as gate:
        settings = parse_broker_url(gate.url, keepalive_s=keepalive, connect_timeout_s=5.0)
        client = make_client(
            settings, client_id="cam-001", will_topic="w", will_payload=b"", max_inflight=1
        )
        checks = 0
        check = client._client.loop_misc

        def counted() -> Any:
            nonlocal checks
            checks += 1
            return check()

        client._client.loop_misc = counted  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        async with translated_connect(client):
            connected_at = loop.time()
            with contextlib.suppress(Exception):  # how paho words the keepalive loss
                await wait_for(client._disconnected, timeout_s=4 * keepalive, what="keepalive")
            lasted = loop.time() - connected_at
    assert 2 * keepalive - 1 <= lasted <= 3 * keepalive, lasted
    assert checks <= 6, f"{checks} keepalive checks in {lasted:.1f} s"
