"""MqttLink against a real private mosquitto: sessions, Will, reconnection, typed errors."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from device.mqtt import (
    Backoff,
    ConnectFailed,
    LinkDown,
    MqttLink,
    OnConnected,
    Presence,
    PublishInterrupted,
    PublishRejected,
    PublishUncertain,
    parse_broker_url,
)
from device.mqtt.settings import ProtocolName
from sim.broker import PrivateBroker
from tests.mqtt_support import wait_for, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cam-0001"
STATUS = f"bwc/v1/dev/{DEVICE}/status"
CMD = f"bwc/v1/dev/{DEVICE}/cmd"
EVENT = f"bwc/v1/dev/{DEVICE}/event"
PRESENCE = Presence(STATUS, online=b'{"online":true}', offline=b'{"online":false}')
pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

FAST = Backoff(base_s=0.02, cap_s=0.2, stable_after_s=5.0)


def make_link(
    broker: PrivateBroker,
    *,
    protocol: ProtocolName = "5",
    on_connected: OnConnected | None = None,
) -> MqttLink:
    settings = parse_broker_url(broker.url, protocol=protocol, connect_timeout_s=3.0, backoff=FAST)
    return MqttLink(
        settings,
        client_id=DEVICE,
        presence=PRESENCE,
        rng=random.Random(1),
        subscriptions=(CMD,),
        on_connected=on_connected,
    )


@asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[MqttLink]:
    """Run the link in a TaskGroup for the block; close it cleanly at the end."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run())
        try:
            yield link
        finally:
            await wait_for(link.close(), what="link to close")


async def retained(broker: PrivateBroker, topic: str) -> bytes:
    """The retained payload on ``topic`` right now, as a fresh subscriber sees it."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert message.retain
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("unreachable")


async def publish_as_controller(broker: PrivateBroker, topic: str, *payloads: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def test_round_trip_and_online_status(mosquitto: PrivateBroker) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as observer:
        await observer.subscribe(EVENT, qos=1)
        async with running(make_link(mosquitto)) as link:
            await wait_for(link.connected.wait(), what="connect")
            assert not link.disconnected.is_set()
            assert await retained(mosquitto, STATUS) == PRESENCE.online
            await publish_as_controller(mosquitto, CMD, b"start")
            message = await wait_for(link.receive(), what="command")
            assert (message.topic, message.payload) == (CMD, b"start")
            await link.publish(EVENT, b"evt-1")
            got = await wait_for(anext(aiter(observer.messages)), what="event")
            assert got.payload == b"evt-1"
        assert link.disconnected.is_set()
    assert await retained(mosquitto, STATUS) == PRESENCE.offline


async def test_publish_while_down_raises_link_down(mosquitto: PrivateBroker) -> None:
    link = make_link(mosquitto)
    with pytest.raises(LinkDown):
        await link.publish(EVENT, b"x")
    async with running(link):
        await wait_for(link.connected.wait(), what="connect")
        await mosquitto.stop()
        await wait_for(link.disconnected.wait(), what="disconnect")
        with pytest.raises(LinkDown):
            await link.publish(EVENT, b"x")
    with pytest.raises(LinkDown):
        await link.publish(EVENT, b"x")


async def test_unreachable_broker_keeps_retrying(mosquitto: PrivateBroker) -> None:
    await mosquitto.stop()
    link = make_link(mosquitto)
    async with running(link):
        await wait_until(lambda: isinstance(link.last_error, ConnectFailed), what="an attempt")
        assert not link.connected.is_set()
        await mosquitto.start()
        await wait_for(link.connected.wait(), what="connect once the broker is back")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_messages_sent_while_offline_arrive_after_reconnect(
    mosquitto: PrivateBroker, protocol: ProtocolName
) -> None:
    async with running(make_link(mosquitto, protocol=protocol)) as first:
        await wait_for(first.connected.wait(), what="first connect")
    await publish_as_controller(mosquitto, CMD, b"a", b"b", b"c")
    async with running(make_link(mosquitto, protocol=protocol)) as second:
        await wait_for(second.connected.wait(), what="second connect")
        assert second.session_present is True
        got = [(await wait_for(second.receive(), what="queued command")).payload for _ in "abc"]
        assert got == [b"a", b"b", b"c"]


async def test_reconnects_after_broker_restart_and_keeps_session(
    mosquitto: PrivateBroker,
) -> None:
    async with running(make_link(mosquitto)) as link:
        await wait_for(link.connected.wait(), what="connect")
        await mosquitto.stop()
        await wait_for(link.disconnected.wait(), what="disconnect")
        await mosquitto.start()
        await wait_until(lambda: link.connects == 2, what="reconnect")
        assert link.session_present is True
        assert await retained(mosquitto, STATUS) == PRESENCE.online
        await publish_as_controller(mosquitto, CMD, b"after-restart")
        assert (await wait_for(link.receive(), what="command")).payload == b"after-restart"


async def test_resubscribes_when_the_broker_lost_the_session() -> None:
    async with (
        PrivateBroker(kind="mosquitto", persistence=False) as broker,
        running(make_link(broker)) as link,
    ):
        await wait_for(link.connected.wait(), what="connect")
        await broker.kill()
        await wait_for(link.disconnected.wait(), what="disconnect")
        await broker.start()
        await wait_until(lambda: link.connects == 2, what="reconnect")
        assert link.session_present is False
        await publish_as_controller(broker, CMD, b"fresh")
        assert (await wait_for(link.receive(), what="command")).payload == b"fresh"


async def test_connack_max_packet_size_reaches_the_callback() -> None:
    seen: list[int | None] = []
    async with (
        PrivateBroker(kind="mosquitto", extra_config=["max_packet_size 4096"]) as broker,
        running(make_link(broker, on_connected=seen.append)) as link,
    ):
        await wait_for(link.connected.wait(), what="connect")
        assert seen == [4096]
        assert link.max_packet_size == 4096
        # Over the announced limit: refused before sending; the link stays up.
        with pytest.raises(PublishRejected, match="maximum packet size"):
            await link.publish(EVENT, b"x" * 4096)
        assert link.connected.is_set()
        await link.publish(EVENT, b"x" * 4000)


async def test_oversized_publish_to_an_unannounced_limit_fails_fast_and_does_not_poison() -> None:
    # message_size_limit is not announced in the CONNACK; mosquitto drops the connection when a
    # publish exceeds it. The publish must fail at once with an "unknown outcome" error, and the
    # message must not be resent at every reconnect (which would kill each new connection).
    async with (
        PrivateBroker(
            kind="mosquitto", max_packet_size=None, extra_config=["message_size_limit 4096"]
        ) as broker,
        running(make_link(broker)) as link,
    ):
        await wait_for(link.connected.wait(), what="connect")
        assert link.max_packet_size is None
        with pytest.raises(PublishInterrupted) as caught:
            await wait_for(link.publish(EVENT, b"x" * 8192, timeout_s=20), timeout_s=3)
        assert isinstance(caught.value, LinkDown)
        assert isinstance(caught.value, PublishUncertain)
        await wait_until(lambda: link.connects == 2, what="reconnect")
        await publish_as_controller(broker, CMD, b"still-up")
        assert (await wait_for(link.receive(), what="command")).payload == b"still-up"
        await link.publish(EVENT, b"small")
        assert link.connects == 2


async def test_no_max_packet_size_when_the_broker_announces_none() -> None:
    seen: list[int | None] = []
    async with (
        PrivateBroker(kind="mosquitto", max_packet_size=None) as broker,
        running(make_link(broker, on_connected=seen.append)) as link,
    ):
        await wait_for(link.connected.wait(), what="connect")
        assert seen == [None]
        assert link.max_packet_size is None


CHILD = """
import asyncio, random, sys
from device.mqtt import MqttLink, Presence, parse_broker_url

async def main() -> None:
    link = MqttLink(
        parse_broker_url(sys.argv[1]), client_id=sys.argv[2], rng=random.Random(0),
        presence=Presence(sys.argv[3], online=b"on", offline=b"off"),
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run())
        await link.connected.wait()
        print("up", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_will_announces_offline_when_the_device_dies(mosquitto: PrivateBroker) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, mosquitto.url, DEVICE, STATUS,
        stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = await wait_for(child.stdout.readline(), timeout_s=10, what="child to connect")
        assert line == b"up\n"
        assert await retained(mosquitto, STATUS) == b"on"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()

    async def status_is_off() -> None:
        while await retained(mosquitto, STATUS) != b"off":
            await asyncio.sleep(0.01)

    await wait_for(status_is_off(), what="the Will")


@pytest.mark.filterwarnings("ignore::DeprecationWarning:amqtt")
@pytest.mark.filterwarnings("ignore:Loading plugins from EntryPoints:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`BrokerSysPlugin`:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_amqtt_private_broker_takes_its_login_and_refuses_anonymous_clients() -> None:
    async with PrivateBroker(kind="amqtt") as broker:
        settings = broker.settings()
        assert (settings.protocol, settings.username) == ("3.1.1", "bwc-sim")
        v311 = aiomqtt.ProtocolVersion.V311
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username=settings.username,
            password=settings.password,
            protocol=v311,
        ) as client:
            await client.publish("bwc/test", b"x", qos=1)
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, protocol=v311):
                pass
