"""The evidence receiver on a real MQTT broker: the asyncio shell around ``EvidenceReceiver``.

One aiomqtt client with a fixed client ID and a persistent session (MQTT 5: clean start off and a
session expiry above zero; MQTT 3.1.1: clean session off), so the broker queues offers, chunks and
audit ranges published while the receiver is down or reconnecting and delivers them when it is
back. Messages are handled one at a time, in arrival order, on one task; the core's disk work
(appends, fsync, renames) runs on a worker thread so the event loop keeps the connection alive
meanwhile. Acks are published at QoS 1 only after the core returned them, that is after the bytes
they promise were fsynced. Idle uploads are released at the core's deadlines. A lost connection
is retried with jittered exponential backoff (the settings' ``Backoff``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.mqtt.settings import BrokerSettings
from protocol.publish import Publish
from sim.receiver.core import EvidenceReceiver

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "bwc-evidence-receiver"
MAX_BATCH: Final = 64
"""Most messages handed to the disk thread in one hop (only messages already received)."""
MAX_UNCONFIRMED: Final = 256
"""Most acks published and not yet confirmed by a PUBACK before the receiver stops reading."""
NO_DELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""paho does not disable Nagle's algorithm: a small ack written right after a PUBACK then waits
for the broker's delayed TCP ACK, about 18 ms per chunk on loopback (3 MB/s at 64 KiB chunks)."""


class ReceiverService:
    """Runs an ``EvidenceReceiver`` against a broker until cancelled.

    ``connected`` is set while subscribed (tests and the CLI wait on it); ``connections`` counts
    successful connections.
    """

    def __init__(
        self,
        core: EvidenceReceiver,
        broker: BrokerSettings,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        rng: random.Random | None = None,
        fresh_session: bool = False,
    ) -> None:
        self.core = core
        self.broker = broker
        self.client_id = client_id
        self.fresh_session = fresh_session
        """Discard the broker's session for ``client_id`` before the first subscription: for a
        receiver whose store and trust are new (a fleet's embedded one), messages queued for an
        earlier run's receiver come from cameras it never trusted, and answering them would
        reject the logs of today's cameras that share those device IDs."""
        self.connected = asyncio.Event()
        self.connections = 0
        self._rng = rng or random.Random()
        self._attempt = 0
        # One worker thread: the core sees one message at a time, in order, off the event loop.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-disk")
        self._unconfirmed: set[asyncio.Task[None]] = set()

    def _client(self, *, clean_session: bool = False) -> aiomqtt.Client:
        broker = self.broker
        session: dict[str, Any] = {}
        if broker.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = broker.session_expiry_s
            # Keep the session: queued offers and chunks survive our absence. A fresh session is
            # clean at the first connect only (paho's first-only option), kept after that.
            clean = mqtt.MQTT_CLEAN_START_FIRST_ONLY if self.fresh_session else False
            session.update(
                protocol=aiomqtt.ProtocolVersion.V5, clean_start=clean, properties=properties
            )
        else:
            session.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=clean_session)
        tls = None
        if broker.tls:
            ca = None if broker.ca_file is None else str(broker.ca_file)
            tls = aiomqtt.TLSParameters(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=self.client_id,
            keepalive=broker.keepalive_s,
            tls_params=tls,
            socket_options=NO_DELAY,
            **session,
        )
        # Acks are published without waiting for each PUBACK: do not warn below our own bound.
        client.pending_calls_threshold = MAX_UNCONFIRMED + MAX_BATCH
        return client

    async def run(self) -> None:
        """Connect, serve, and reconnect after any connection loss, until cancelled.

        On the way out (cancelled) it waits for the message being stored, if any, to finish.
        """
        if self.fresh_session and self.broker.protocol != "5":
            await self._discard_session()
        client = self._client()  # reusable: one client object, one session
        try:
            while True:
                try:
                    async with client:
                        try:
                            await self._serve(client)
                        finally:
                            self._abandon_unconfirmed()
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    delay = self.broker.backoff.delay(self._attempt, self._rng)
                    self._attempt = min(self._attempt + 1, 32)
                    log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            self._disk.shutdown(wait=True)

    async def _discard_session(self) -> None:
        """MQTT 3.1.1 has no first-only clean start: one clean-session connection ends the old
        session (the broker drops a clean session at disconnect), then the persistent one
        starts empty."""
        while True:
            try:
                async with self._client(clean_session=True):
                    return
            except aiomqtt.MqttError as exc:
                delay = self.broker.backoff.delay(self._attempt, self._rng)
                self._attempt = min(self._attempt + 1, 32)
                log.warning("cannot reach the broker (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic in self.core.subscriptions():
            await client.subscribe(topic, qos=1)
        self.connections += 1
        self._attempt = 0
        self.connected.set()
        log.info("subscribed at %s:%d as %s", self.broker.host, self.broker.port, client.identifier)
        messages = aiter(client.messages)
        while True:
            deadline = self.core.next_deadline()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await anext(messages)
            except TimeoutError:
                await self._publish(client, await self._on_disk(self.core.handle_timeout))
                continue
            # Everything already queued goes to the disk thread in one hop, in arrival order.
            batch = [_received(message)]
            while len(client.messages) and len(batch) < MAX_BATCH:
                batch.append(_received(await anext(messages)))
            handle = functools.partial(self._handle_batch, batch)
            await self._publish(client, await self._on_disk(handle))

    def _handle_batch(self, batch: list[tuple[str, bytes]], now: float) -> list[Publish]:
        """On the disk thread: the core's acks for each message; a failure drops that one only."""
        out: list[Publish] = []
        for topic, payload in batch:
            try:
                out += self.core.on_message(topic, payload, now)
            except Exception:  # supervisor: log and keep serving; the device's timer resends
                log.exception("the receiver failed on a message on %s; dropped", topic)
        return out

    async def _on_disk(self, handle: Callable[[float], list[Publish]]) -> list[Publish]:
        """Run one core entry point on the disk thread; a failure drops that message only."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._disk, handle, loop.time())
        except Exception:  # supervisor: log and keep serving; the device's timer resends
            log.exception("the receiver failed on a message; dropped")
            return []

    async def _publish(self, client: aiomqtt.Client, publishes: list[Publish]) -> None:
        """Publish in order without waiting for each PUBACK (at most ``MAX_UNCONFIRMED`` wait).

        The tasks start in creation order, so paho writes the acks in order. Waiting for each
        PUBACK before reading the next chunk made every chunk cost a broker round trip.
        """
        for item in publishes:
            task = asyncio.create_task(
                client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            )
            self._unconfirmed.add(task)
            task.add_done_callback(self._confirmed)
        while len(self._unconfirmed) > MAX_UNCONFIRMED:
            await asyncio.wait(self._unconfirmed, return_when=asyncio.FIRST_COMPLETED)

    def _confirmed(self, task: asyncio.Task[None]) -> None:
        self._unconfirmed.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The connection is gone (the message loop sees it too); the device resends.
            log.info("an ack was not confirmed by the broker: %s", error)

    def _abandon_unconfirmed(self) -> None:
        for task in list(self._unconfirmed):
            task.cancel()


def _received(message: aiomqtt.Message) -> tuple[str, bytes]:
    raw = message.payload
    return message.topic.value, bytes(raw) if isinstance(raw, bytes | bytearray) else b""
