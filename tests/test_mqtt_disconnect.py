"""Sockets at disconnect: no write is ever registered for a socket paho has already closed.

aiomqtt 2.5 registers paho's socket for writing later (``call_soon_threadsafe(loop.add_writer)``)
but unregisters it and lets paho close it at once. When paho closes the socket in the same loop
pass as it queued a packet (the broker dropped the connection), the late ``add_writer`` met a
closed descriptor and asyncio reported ``EBADF`` (``device.mqtt.client`` has the fix). Every test
here runs against its own private mosquitto and fails on any ``OSError`` that reaches the event
loop's exception handler or a log record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import select
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
import pytest_asyncio

from device.mqtt import Backoff, LinkDown, MqttLink, Presence
from device.mqtt.client import DeviceClient, make_client, translated_connect
from sim.broker import PrivateBroker
from tests.mqtt_support import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

FAST = Backoff(base_s=0.02, cap_s=0.2, stable_after_s=5.0)
FLEET = 300
"""Links disconnecting at once, as a fleet's shutdown does (about 2 s against mosquitto)."""
DROPPED = 50
"""Clients the broker drops in one loop pass, each with a packet just queued."""


def device_id(index: int) -> str:
    return f"cam-{index:05d}"


class SocketErrors(logging.Handler):
    """Collects ``OSError``s the event loop's exception handler or any logger sees."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if isinstance(error, OSError) or "Bad file descriptor" in text:
            self.found.append(f"log {record.name}: {text} {error!r}")

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError):
            self.found.append(f"loop: {context.get('message')} {error!r} {context.get('handle')}")
        else:
            loop.default_exception_handler(context)


@pytest_asyncio.fixture
async def socket_errors() -> AsyncIterator[SocketErrors]:
    """Records socket errors from the loop's exception handler and the root logger."""
    loop = asyncio.get_running_loop()
    errors = SocketErrors()
    root = logging.getLogger()
    root.addHandler(errors)
    loop.set_exception_handler(errors.loop_exception)
    try:
        yield errors
    finally:
        loop.set_exception_handler(None)
        root.removeHandler(errors)


def take_over(broker: PrivateBroker, client_id: str) -> socket.socket:
    """Connect as ``client_id`` (MQTT 5, blocking): the broker drops that id's other connection.

    Returns once the CONNACK is in; the caller closes the socket.
    """
    name = client_id.encode()
    # Protocol name, level 5, flags (clean start), keepalive 60 s, no properties; the client id.
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + struct.pack("!H", len(name)) + name
    sock = socket.create_connection((broker.host, broker.port), timeout=5.0)
    sock.sendall(bytes([0x10, len(body)]) + body)
    if sock.recv(1) != b"\x20":
        sock.close()
        raise AssertionError(f"no CONNACK for the takeover of {client_id}")
    return sock


def wait_readable(clients: list[DeviceClient], timeout_s: float = 5.0) -> None:
    """Block (the event loop too) until each client's socket has the broker's goodbye to read."""
    pending = [sock for sock in (c._client.socket() for c in clients) if sock is not None]
    while pending:
        ready, _, _ = select.select(pending, [], [], timeout_s)
        if not ready:
            raise AssertionError(f"{len(pending)} connections were not dropped by the broker")
        pending = [sock for sock in pending if sock not in ready]


async def test_many_links_disconnecting_at_once_hit_no_socket_errors(
    mosquitto: PrivateBroker, socket_errors: SocketErrors
) -> None:
    settings = mosquitto.settings(connect_timeout_s=30.0, backoff=FAST)
    links = [
        MqttLink(
            settings,
            client_id=device_id(i),
            presence=Presence(f"bwc/v1/dev/{device_id(i)}/status", b"on", b"off"),
            rng=random.Random(i),
            subscriptions=(f"bwc/v1/dev/{device_id(i)}/cmd",),
        )
        for i in range(FLEET)
    ]
    async with asyncio.TaskGroup() as tasks:
        for link in links:
            tasks.create_task(link.run())
        await wait_for(
            asyncio.gather(*(link.connected.wait() for link in links)),
            timeout_s=60,
            what="every link to connect",
        )
        await asyncio.gather(
            *(
                link.publish(f"bwc/v1/dev/{device_id(i)}/event", b"x" * 200)
                for i, link in enumerate(links)
            )
        )
        await wait_for(
            asyncio.gather(*(link.close() for link in links)),
            timeout_s=60,
            what="every link to close",
        )
    assert all(link.disconnected.is_set() for link in links)
    assert socket_errors.found == []


async def test_connections_dropped_while_a_packet_is_queued_hit_no_socket_errors(
    mosquitto: PrivateBroker, socket_errors: SocketErrors
) -> None:
    # The race, made deterministic. Each client's publisher waits for ``go``. With the loop
    # blocked, the broker drops every connection (a session takeover); then ``go`` is set, so
    # the next loop pass runs every publisher first (paho queues the PUBLISH and asks for the
    # socket to be watched for writing) and then every client's reader, which finds its
    # connection closed and lets paho close the socket. aiomqtt's add_writer, deferred to the
    # pass after, then met a closed descriptor: EBADF, once per client.
    settings = mosquitto.settings(connect_timeout_s=10.0)
    clients = [
        make_client(
            settings,
            client_id=device_id(i),
            will_topic=f"bwc/v1/dev/{device_id(i)}/status",
            will_payload=b"off",
            max_inflight=20,
        )
        for i in range(DROPPED)
    ]
    go = asyncio.Event()

    async def publish_when_told(index: int, client: DeviceClient) -> None:
        await go.wait()
        topic = f"bwc/v1/dev/{device_id(index)}/event"
        await client.publish_acked(topic, b"x", qos=1, retain=False, timeout_s=5.0)

    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(translated_connect(client))
        publishers = [
            asyncio.create_task(publish_when_told(i, client)) for i, client in enumerate(clients)
        ]
        await asyncio.sleep(0)  # every publisher is waiting for ``go``
        for i in range(DROPPED):
            stack.callback(take_over(mosquitto, device_id(i)).close)
        wait_readable(clients)
        go.set()
        outcomes = await asyncio.gather(*publishers, return_exceptions=True)
        assert all(isinstance(outcome, LinkDown) for outcome in outcomes), outcomes
        for client in clients:
            with pytest.raises(aiomqtt.MqttError):
                await anext(client.messages)  # each client saw its connection end
        await asyncio.sleep(0.05)  # a late add_writer would have run by now
    assert socket_errors.found == []
