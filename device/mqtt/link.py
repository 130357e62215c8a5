"""``MqttLink``: the device's connection supervisor around aiomqtt 2.5.

One long-lived task (``run()``, inside the caller's ``TaskGroup``) owns the connection. It connects
with jittered exponential backoff, and on every (re)connect it re-subscribes, tells the caller the
broker's packet limit (``on_connected``), publishes the retained online status, and only then
sets ``connected``. Incoming messages go to one queue that outlives connections.

The session is persistent: MQTT 5 with clean start off and a session expiry (or 3.1.1 with clean
session off) under a fixed client id, so the broker queues QoS 1 messages for the device while it
is away. The Last Will (retained, QoS 1) announces the device offline when the connection dies;
``close()`` publishes the offline status itself, since a clean disconnect does not fire the Will.

``publish()`` never waits for a connection: it raises ``LinkDown`` at once when the link is down
(callers keep the message, e.g. in ``device.journal.EventJournal``, and retry after
``connected``), ``PublishTimeout`` / ``PublishInterrupted`` when the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiomqtt

from device.mqtt.client import (
    Connack,
    DeviceClient,
    make_client,
    publish_packet_size,
    translated_connect,
)
from device.mqtt.errors import LinkDown, MqttLinkError, PublishRejected
from device.mqtt.settings import BrokerSettings

log = logging.getLogger(__name__)

OnConnected = Callable[[int | None], None]
"""Called on each (re)connect with the broker's maximum packet size (``None``: not announced)."""


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """A message received on one of the link's subscriptions."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    """The retained status topic and its payloads: ``online`` on connect, ``offline`` as Will."""

    topic: str
    online: bytes
    offline: bytes


class MqttLink:
    """Keeps one persistent MQTT session alive; see the module docstring for the contract.

    ``connected`` is set while the link is up and ready (subscribed, online status published);
    ``disconnected`` is its complement. Both are plain ``asyncio.Event`` objects to wait on.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        presence: Presence,
        rng: random.Random,
        subscriptions: Sequence[str] = (),
        on_connected: OnConnected | None = None,
        publish_timeout_s: float = 10.0,
        max_inflight: int = 20,
    ) -> None:
        if not client_id:
            raise ValueError("a persistent session needs a fixed, non-empty client id")
        self.settings = settings
        self.client_id = client_id
        self.presence = presence
        self.subscriptions = tuple(subscriptions)
        self.publish_timeout_s = publish_timeout_s
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self.connects = 0
        """How many times the link came up (1 after the first connection)."""
        self.last_error: BaseException | None = None
        """Why the last connection attempt or connection ended (for status and logs)."""
        self._rng = rng
        self._on_connected = on_connected
        self._max_inflight = max_inflight
        self._client: DeviceClient | None = None
        self._connack: Connack | None = None
        self._incoming: asyncio.Queue[LinkMessage | None] = asyncio.Queue()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False

    @property
    def max_packet_size(self) -> int | None:
        """The broker's MaximumPacketSize from the last CONNACK (MQTT 5); ``None`` if unlimited."""
        return None if self._connack is None else self._connack.max_packet_size

    @property
    def session_present(self) -> bool | None:
        """Whether the broker resumed a stored session at the last connect (``None`` before)."""
        return None if self._connack is None else self._connack.session_present

    async def run(self) -> None:
        """Connect, serve and reconnect until ``close()``; run it once, in a ``TaskGroup``."""
        if self._started:
            raise RuntimeError("MqttLink.run() can only be called once")
        self._started = True
        loop = asyncio.get_running_loop()
        backoff = self.settings.backoff
        attempt = 0
        try:
            while not self._closing.is_set():
                up_since = await self._connection(self._new_client())
                if self._closing.is_set():
                    break
                if up_since is not None and loop.time() - up_since >= backoff.stable_after_s:
                    attempt = 0
                delay = backoff.delay(attempt, self._rng)
                attempt += 1
                log.info("MQTT link down (%s); retrying in %.2f s", self.last_error, delay)
                await self._pause(delay)
        finally:
            self._mark_down()
            self._incoming.put_nowait(None)
            self._stopped.set()

    async def close(self) -> None:
        """Publish the offline status, disconnect cleanly and let ``run()`` return."""
        self._closing.set()
        if self._started:
            await self._stopped.wait()
        else:
            self._incoming.put_nowait(None)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        """Publish and wait for the broker's acknowledgement (PUBACK for QoS 1).

        Raises ``LinkDown`` when not connected (nothing sent), ``PublishTimeout`` or
        ``PublishInterrupted`` when the outcome is unknown (may still be delivered),
        ``PublishRejected`` when the client or the broker (MQTT 5 reason code) refused it, or
        when it is larger than the broker's announced maximum packet size (then nothing is sent).
        A PUBACK is not end-to-end delivery: see docs/protocol.md.
        """
        client = self._client
        if client is None or not self.connected.is_set() or self._closing.is_set():
            raise LinkDown(f"MQTT link is down; {topic!r} not sent")
        limit = self.max_packet_size
        mqtt5 = self.settings.protocol == "5"
        if (
            limit is not None
            and publish_packet_size(topic, len(payload), qos=qos, mqtt5=mqtt5) > limit
        ):
            raise PublishRejected(
                f"{len(payload)}-byte payload to {topic!r} exceeds the broker's "
                f"maximum packet size of {limit} bytes; not sent"
            )
        timeout = self.publish_timeout_s if timeout_s is None else timeout_s
        await client.publish_acked(topic, payload, qos=qos, retain=retain, timeout_s=timeout)

    async def receive(self) -> LinkMessage:
        """The next incoming message; raises ``LinkDown`` once the link is closed and drained."""
        item = await self._incoming.get()
        if item is None:
            self._incoming.put_nowait(None)  # let every other receiver see the end too
            raise LinkDown("MQTT link closed")
        return item

    async def messages(self) -> AsyncIterator[LinkMessage]:
        """Iterate incoming messages across reconnects; ends when the link is closed."""
        while True:
            try:
                message = await self.receive()
            except LinkDown:
                return
            yield message

    def _new_client(self) -> DeviceClient:
        """A fresh client for one connection attempt.

        aiomqtt's client is reusable only after a clean exit: a timed-out wait for its
        disconnect leaves its lock held, and every later attempt failed "reusable, but not
        reentrant"; a timed-out CONNACK leaves paho's socket and state for paho's next
        ``connect()`` to clean up in aiomqtt's executor thread. A client per attempt has none
        of that. Nothing the session needs is in the client: clean start (MQTT 5) or clean
        session (3.1.1) is off on every connect, so the broker keeps the session; a publish
        waiting for its PUBACK ends with its connection (``PublishInterrupted``) and paho does
        not resend it (``DeviceClient._forget``: callers own retries), so neither does the
        next client.
        """
        return make_client(
            self.settings,
            client_id=self.client_id,
            will_topic=self.presence.topic,
            will_payload=self.presence.offline,
            max_inflight=self._max_inflight,
        )

    async def _connection(self, client: DeviceClient) -> float | None:
        """One connection's life: returns the loop time it came up, or ``None`` if it never did."""
        up_since: float | None = None
        try:
            async with translated_connect(client):
                up_since = asyncio.get_running_loop().time()
                await self._serve(client)
        except MqttLinkError as exc:
            self.last_error = exc
        except aiomqtt.MqttError as exc:  # an aiomqtt call during setup; the connection is gone
            self.last_error = LinkDown(f"connection lost: {exc}")
        except Exception as exc:  # supervisor: a bug in a callback must not end the link
            log.exception("MQTT link failed unexpectedly; reconnecting")
            self.last_error = exc
        finally:
            self._mark_down()
            self._client = None  # spent: translated_connect closed its socket
        return up_since

    async def _serve(self, client: DeviceClient) -> None:
        """Set the fresh connection up, then pump messages until it drops or we close."""
        self._connack = client.connack
        timeout = self.settings.connect_timeout_s
        if self.subscriptions:
            await self._subscribe(client, timeout)
        if self._on_connected is not None:
            try:
                self._on_connected(self.max_packet_size)
            except Exception:  # supervisor: the caller's callback must not break the link
                log.exception("on_connected callback failed")
        status = self.presence
        await client.publish_acked(
            status.topic, status.online, qos=1, retain=True, timeout_s=timeout
        )
        self._client = client
        self.connects += 1
        self.disconnected.clear()
        self.connected.set()
        log.info("MQTT link up (session present: %s)", self.session_present)
        await self._pump_until_closed_or_lost(client)
        if self._closing.is_set():
            with contextlib.suppress(MqttLinkError):
                await client.publish_acked(
                    status.topic, status.offline, qos=1, retain=True, timeout_s=timeout
                )
        else:
            raise LinkDown("connection lost")

    async def _subscribe(self, client: DeviceClient, timeout: float) -> None:
        # Its own frame: paho's reason codes (a few KiB) are not kept for the connection's life.
        codes = await client.subscribe([(f, 1) for f in self.subscriptions], timeout=timeout)
        for topic_filter, code in zip(self.subscriptions, codes, strict=False):
            if getattr(code, "value", code) not in (0, 1, 2):
                log.error("subscription to %r refused: %s", topic_filter, code)

    async def _pump_until_closed_or_lost(self, client: DeviceClient) -> None:
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(self._pump(client))
            watch = tg.create_task(self._closing.wait())
            pump.add_done_callback(lambda _: watch.cancel())
            watch.add_done_callback(lambda _: pump.cancel())

    async def _pump(self, client: DeviceClient) -> None:
        try:
            async for message in client.messages:
                incoming = LinkMessage(str(message.topic), bytes(message.payload), message.retain)
                self._incoming.put_nowait(incoming)
        except aiomqtt.MqttError as exc:
            self.last_error = LinkDown(f"connection lost: {exc}")
            self._mark_down()
            client.fail_pending("connection lost")

    def _mark_down(self) -> None:
        self.connected.clear()
        self.disconnected.set()

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()
