"""The evidence receiver on a real MQTT broker: the asyncio shell around ``EvidenceReceiver``.

One aiomqtt client with a fixed client ID and a persistent MQTT 5 session (clean start off, a
session expiry above zero), so the broker queues offers and chunks published while the receiver
is down or reconnecting and delivers them when it is back. Messages are handled one at a time,
in arrival order, on one task; the core's disk work (appends, fsync, renames) runs on a worker
thread so the event loop keeps the connection alive meanwhile. Acks are published at QoS 1 only
after the core returned them, that is after the bytes they promise were fsynced. Idle uploads are
released at the core's deadlines. A lost connection is retried with jittered exponential backoff.
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
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.errors import ConfigError
from protocol.publish import Publish
from sim.receiver.core import EvidenceReceiver

log = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "bwc-evidence-receiver"
NO_DELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""paho does not disable Nagle's algorithm: a small ack written right after a PUBACK then waits
for the broker's delayed TCP ACK, about 18 ms per chunk on loopback (3 MB/s at 64 KiB chunks)."""
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where and how to connect, validated once (``from_url``)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    client_id: str = DEFAULT_CLIENT_ID
    session_expiry_s: int = 24 * 3600
    keepalive_s: int = 30
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @classmethod
    def from_url(cls, url: str, **options: object) -> BrokerConfig:
        """Parse ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (credentials may be in the URL).

        ``ConfigError`` for any other scheme, a missing host or a bad port.
        """
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"broker URL {url!r}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r} names no host")
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise ConfigError(f"broker URL {url!r}: only scheme://host:port is accepted")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: bad port") from exc
        fields: dict[str, object] = {"host": parts.hostname, "port": port}
        fields["tls"] = parts.scheme == "mqtts"
        if parts.username:
            fields["username"] = unquote(parts.username)
        if parts.password:
            fields["password"] = unquote(parts.password)
        fields.update({k: v for k, v in options.items() if v is not None})
        return cls(**fields)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"broker port {self.port} is not 1-65535")
        if self.session_expiry_s <= 0:
            raise ConfigError("session expiry must be > 0 s, or the broker queues nothing")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("backoff: 0 < initial <= max is required")


class Backoff:
    """Exponential backoff with full jitter: each delay is uniform in [0, min(max, initial*2^n)]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial = initial_s
        self._max = max_s
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with each call until ``reset``."""
        ceiling = min(self._max, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Back to the initial delay (after a successful connection)."""
        self._attempt = 0


class ReceiverService:
    """Runs an ``EvidenceReceiver`` against a broker until cancelled.

    ``connected`` is set while subscribed (tests and the CLI wait on it); ``connections`` counts
    successful connections.
    """

    def __init__(
        self, core: EvidenceReceiver, broker: BrokerConfig, *, rng: random.Random | None = None
    ) -> None:
        self.core = core
        self.broker = broker
        self.connected = asyncio.Event()
        self.connections = 0
        self._backoff = Backoff(
            broker.backoff_initial_s, broker.backoff_max_s, rng or random.Random()
        )
        # One worker thread: the core sees one message at a time, in order, off the event loop.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-disk")

    def _client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.broker.session_expiry_s
        tls = None
        if self.broker.tls:
            tls = aiomqtt.TLSParameters(ca_certs=self.broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.broker.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # keep the session: queued offers and chunks survive our absence
            properties=properties,
            keepalive=self.broker.keepalive_s,
            tls_params=tls,
            socket_options=NO_DELAY,
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
                    delay = self._backoff.next_delay()
                    log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            self._disk.shutdown(wait=True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic in self.core.subscriptions():
            await client.subscribe(topic, qos=1)
        self.connections += 1
        self._backoff.reset()
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
