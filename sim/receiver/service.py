"""The evidence receiver on a real MQTT broker: the asyncio shell around ``EvidenceReceiver``.

One aiomqtt client with a fixed client ID and a persistent session (MQTT 5: clean start off and a
session expiry above zero; MQTT 3.1.1: clean session off), so the broker queues offers and chunks
published while the receiver is down or reconnecting and delivers them when it is back. Messages
are handled one at a time, in arrival order, on one task; the core's disk work (appends, fsync,
renames) runs on a worker thread so the event loop keeps the connection alive meanwhile. Acks are
published at QoS 1 only after the core returned them, that is after the bytes they promise were
fsynced. Idle uploads are released at the core's deadlines. A lost connection is retried with
jittered exponential backoff (the settings' ``Backoff``).
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.mqtt.settings import BrokerSettings
from protocol.publish import Publish
from sim.receiver.core import EvidenceReceiver

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "bwc-evidence-receiver"
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
    ) -> None:
        self.core = core
        self.broker = broker
        self.client_id = client_id
        self.connected = asyncio.Event()
        self.connections = 0
        self._rng = rng or random.Random()
        self._attempt = 0
        # One worker thread: the core sees one message at a time, in order, off the event loop.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-disk")

    def _client(self) -> aiomqtt.Client:
        broker = self.broker
        session: dict[str, Any] = {}
        if broker.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = broker.session_expiry_s
            # Keep the session: queued offers and chunks survive our absence.
            session.update(
                protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=properties
            )
        else:
            session.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        tls = None
        if broker.tls:
            ca = None if broker.ca_file is None else str(broker.ca_file)
            tls = aiomqtt.TLSParameters(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        return aiomqtt.Client(
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

    async def run(self) -> None:
        """Connect, serve, and reconnect after any connection loss, until cancelled.

        On the way out (cancelled) it waits for the message being stored, if any, to finish.
        """
        client = self._client()  # reusable: one client object, one session
        try:
            while True:
                try:
                    async with client:
                        await self._serve(client)
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    delay = self.broker.backoff.delay(self._attempt, self._rng)
                    self._attempt = min(self._attempt + 1, 32)
                    log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            self._disk.shutdown(wait=True)

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
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
            handle = functools.partial(self.core.on_message, message.topic.value, payload)
            await self._publish(client, await self._on_disk(handle))

    async def _on_disk(self, handle: Callable[[float], list[Publish]]) -> list[Publish]:
        """Run one core entry point on the disk thread; a failure drops that message only."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._disk, handle, loop.time())
        except Exception:  # supervisor: log and keep serving; the device's timer resends
            log.exception("the receiver failed on a message; dropped")
            return []

    async def _publish(self, client: aiomqtt.Client, publishes: list[Publish]) -> None:
        for item in publishes:
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
