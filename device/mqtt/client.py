"""The boundary with aiomqtt 2.5 / paho 2.x: one client class and the translation of their errors.

``DeviceClient`` is an ``aiomqtt.Client`` that adds three things aiomqtt 2.5 does not expose, and
fixes races at connect and disconnect:

* the CONNACK: ``session_present`` and the broker's ``MaximumPacketSize`` (MQTT 5 only);
* publishes that fail fast when the connection drops (aiomqtt's own ``publish`` keeps waiting for
  a PUBACK until its timeout even after the socket is gone);
* MQTT 5 PUBACK reason codes: a broker refusing a message (0x80 and above) raises
  ``PublishRejected`` instead of passing for success;
* a socket is watched for reading or writing only while paho still has it open (see
  ``device.mqtt.sockets``);
* ``drop_socket()`` closes, on the event loop's thread, a socket that a timed-out CONNACK or a
  timed-out disconnect left open (aiomqtt leaves it to paho's next ``connect()``, which runs in
  aiomqtt's executor thread and so changed the loop's registrations from that thread).

A client makes one connection: ``translated_connect`` drops its socket when the connection ends,
and ``MqttLink`` makes a fresh client for each attempt (see ``MqttLink._new_client``).

It does so by overriding aiomqtt's paho callbacks (``_on_connect``, ``_on_disconnect``,
``_on_publish``), each of which still calls aiomqtt's own, on top of
``device.mqtt.sockets.SocketGuardedClient`` (which replaces aiomqtt's socket callbacks). These are
private to aiomqtt, so the dependency is pinned to ``aiomqtt>=2.5,<3``, and
``tests/test_mqtt_link.py``, ``tests/test_mqtt_disconnect.py`` and ``tests/test_mqtt_timeouts.py``
cover every one of them against a real mosquitto. Nothing outside ``device.mqtt`` sees an aiomqtt
or paho type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final, Self

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.mqtt.errors import (
    ConnectFailed,
    LinkDown,
    PublishInterrupted,
    PublishRejected,
    PublishTimeout,
)
from device.mqtt.settings import BrokerSettings
from device.mqtt.sockets import SocketGuardedClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connack:
    """What the broker said when it accepted the connection."""

    session_present: bool
    max_packet_size: int | None
    """The broker's MaximumPacketSize (MQTT 5 CONNACK property); ``None``: no limit announced."""


def publish_packet_size(topic: str, payload_len: int, *, qos: int, mqtt5: bool) -> int:
    """Bytes on the wire of a PUBLISH with no properties: what a broker's packet limit counts."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos > 0 else 0) + (1 if mqtt5 else 0)
    remaining += payload_len
    varint = 1
    while remaining >= 128**varint:
        varint += 1
    return 1 + varint + remaining


def _reason_value(code: ReasonCode | int) -> int:
    return code.value if isinstance(code, ReasonCode) else int(code)


class DeviceClient(SocketGuardedClient):
    """aiomqtt's client plus CONNACK details, fail-fast publishes and PUBACK reason codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connack: Connack | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        _ack_reads_at_once(self._client)

    async def __aenter__(self) -> Self:
        # aiomqtt 2.5 leaves ``_connected`` resolved after a connection is lost (its __aexit__
        # returns early), so the next __aenter__ would not wait for the CONNACK and a refusal
        # would go unseen (aiomqtt issue #288). Start each connection with a fresh future.
        if self._connected.done() and not self._lock.locked():
            self._connected = asyncio.get_running_loop().create_future()
        return await super().__aenter__()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        size = getattr(properties, "MaximumPacketSize", None) if properties else None
        self.connack = Connack(
            session_present=bool(flags.session_present),
            max_packet_size=int(size) if size is not None else None,
        )
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.fail_pending(f"connection lost ({reason_code})")
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            if _reason_value(reason_code) >= 0x80:
                fut.set_exception(PublishRejected(f"broker refused the message: {reason_code}"))
            else:
                fut.set_result(None)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def _close_socket(self) -> None:
        self.fail_pending("connection closed")
        super()._close_socket()

    async def _misc_loop(self) -> None:
        # Replaces aiomqtt's, which wakes every second for each client so that paho can check
        # its keepalive: with a thousand cameras in one event loop those wake-ups (and their
        # timer-heap churn) were a fifth of a fleet worker's CPU. Sleep until paho's next
        # keepalive deadline instead; paho's own clock, since it compares against its stamps.
        client = self._client
        while client.loop_misc() == paho.MQTT_ERR_SUCCESS:
            await asyncio.sleep(_until_keepalive_due(client, paho.time_func()))

    def fail_pending(self, why: str) -> None:
        """Wake every publish waiting for an acknowledgement with ``PublishInterrupted``."""
        acks, self._acks = self._acks, {}
        for mid, fut in acks.items():
            self._forget(mid, live=False)
            if not fut.done():
                fut.set_exception(PublishInterrupted(f"{why}; the message may still be delivered"))

    def _forget(self, mid: int, *, live: bool) -> None:
        """Stop paho from resending message ``mid`` on a later connection.

        Our callers own retries (the journal replays, the uploader resends), and a message the
        broker cannot take (over an unannounced size limit: mosquitto then drops the connection)
        would otherwise be resent at every reconnect, killing each new connection. ``live``: the
        connection is up, so free the in-flight slot now (on a reconnect paho recounts them).
        """
        client = self._client
        with client._out_message_mutex:
            message = client._out_messages.pop(mid, None)
            if live and message is not None and message.state == paho.mqtt_ms_wait_for_puback:
                client._inflight_messages -= 1
                client._update_inflight()

    async def publish_acked(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, timeout_s: float
    ) -> None:
        """Publish and wait for the PUBACK (QoS 1/2) or the write (QoS 0), in typed errors."""
        try:
            info = self._client.publish(topic, payload, qos, retain)
        except ValueError as exc:
            raise PublishRejected(f"cannot publish to {topic!r}: {exc}") from exc
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(f"publish to {topic!r} not sent: {paho.error_string(info.rc)}")
        if info.is_published():
            return
        # No await between paho's publish and this registration, and paho only reads PUBACKs
        # from a later event-loop callback: the waiter is in place before any answer can arrive.
        fut = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = fut
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            self._forget(info.mid, live=True)
            raise PublishTimeout(
                f"no acknowledgement for {topic!r} in {timeout_s} s; unknown: it may still be "
                "delivered (a message over the broker's packet limit also ends this way)"
            ) from None
        finally:
            self._acks.pop(info.mid, None)


NO_DELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
_QUICK_ACK: Final[int | None] = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def _ack_reads_at_once(client: paho.Client) -> None:
    """After every socket read, re-arm Linux's TCP_QUICKACK (it does not stay on by itself).

    A broker that leaves Nagle's algorithm on (mosquitto's default: ``set_tcp_nodelay false``)
    holds each small packet it sends us (a PUBACK, an upload ack) until we have ACKed the one
    before, and Linux delays that ACK while we send nothing back. An uploading device waiting for
    acks then stalls: 64 KiB chunks moved at 22 MB/s on loopback instead of 75 (the receiver's
    side made no difference). Reads are hooked at paho's ``_sock_recv``, private like the
    callbacks above; without TCP_QUICKACK (not Linux) nothing changes.
    """
    if _QUICK_ACK is None:
        return
    read = client._sock_recv

    def read_and_ack(bufsize: int) -> bytes:
        data = read(bufsize)
        sock = client._sock
        if isinstance(sock, socket.socket):  # TLS sockets too; not a websocket wrapper
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICK_ACK, 1)
        return data

    client._sock_recv = read_and_ack  # type: ignore[method-assign]


def make_client(
    settings: BrokerSettings,
    *,
    client_id: str,
    will_topic: str,
    will_payload: bytes,
    max_inflight: int,
) -> DeviceClient:
    """A client set up for a persistent session, with the retained QoS 1 Last Will.

    MQTT 5: clean start off on every connect (aiomqtt's default cleans the first one, which
    would wipe the session at each boot) and a session expiry interval. MQTT 3.1.1: clean
    session off. The one socket option is ``TCP_NODELAY``: without it each small upload ack
    waited behind a delayed TCP ACK (about 18 ms a chunk; 64 KiB chunks ran at 3 MB/s instead of
    23). Never a small send buffer.
    """
    kwargs: dict[str, Any] = {}
    if settings.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = settings.session_expiry_s
        kwargs.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
    else:
        kwargs.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
    if settings.tls:
        ca = None if settings.ca_file is None else str(settings.ca_file)
        kwargs["tls_params"] = aiomqtt.TLSParameters(ca_certs=ca)
    return DeviceClient(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=client_id,
        will=aiomqtt.Will(will_topic, will_payload, qos=1, retain=True),
        keepalive=settings.keepalive_s,
        timeout=settings.connect_timeout_s,
        max_inflight_messages=max_inflight,
        socket_options=NO_DELAY,
        logger=log,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def translated_connect(client: DeviceClient) -> AsyncIterator[DeviceClient]:
    """Enter ``client`` (connect), turning aiomqtt's connect errors into ``ConnectFailed``.

    However the connection ends (a refusal, a timeout, cancellation, a clean exit), the client's
    socket is closed on the way out (``DeviceClient.drop_socket``); the client is then spent.
    """
    try:
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            raise ConnectFailed(f"broker refused the connection: {exc}", refused=True) from exc
        except aiomqtt.MqttError as exc:
            raise ConnectFailed(f"cannot connect: {exc}{_no_connack_hint(client, exc)}") from exc
        try:
            yield client
        finally:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as exc:
                log.info("disconnect was not clean: %s", exc)
    finally:
        client.drop_socket()


def _no_connack_hint(client: DeviceClient, exc: aiomqtt.MqttError) -> str:
    """Why a broker may accept TCP and never answer: say it, so the user can act."""
    if "timed out" not in str(exc):
        return ""
    if client._client.protocol == paho.MQTTv5:
        # A broker without MQTT 5 (RabbitMQ before 3.13, for one) drops the CONNECT unanswered.
        return " (no CONNACK: a broker without MQTT 5 answers nothing; try --mqtt 3.1.1)"
    return " (no CONNACK: the broker is overloaded or not an MQTT broker)"


MISC_FLOOR_S: Final = 0.25
"""The shortest sleep between paho's keepalive checks (never a busy loop at a deadline)."""


def _until_keepalive_due(client: paho.Client, now: float) -> float:
    """Seconds until paho's ``loop_misc`` has something to do: send a PINGREQ (nothing sent or
    received for a keepalive) or give up on a PINGRESP (a keepalive after the PINGREQ)."""
    keepalive = client._keepalive
    if keepalive <= 0:
        return 60.0
    with client._msgtime_mutex:
        quiet_since = min(client._last_msg_out, client._last_bytes_received)
    due = quiet_since + keepalive
    if client._ping_t > 0:
        due = min(due, client._ping_t + keepalive)
    return min(float(keepalive), max(MISC_FLOOR_S, due - now))
