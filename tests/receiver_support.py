"""Builders shared by the evidence receiver tests: real signed segments, a receiver rig.

Segments are made by the device's own classes (identity, evidence store, media source), so the
receiver sees exactly what a camera uploads and its store must pass ``bwc-sim verify``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from device.identity import DeviceIdentity
from device.segmentmeta import SegmentClosing, SegmentStart
from device.signing import TrustStore
from device.store import ClosedSegment, EvidenceStore
from protocol.publish import Publish
from protocol.topics import DeviceChannel, Topics
from protocol.upload import (
    Ack,
    Finished,
    Offer,
    SendChunk,
    SenderAction,
    SenderConfig,
    SendOffer,
    UploadSender,
    decode_ack,
    encode_chunk,
    encode_control,
    make_offer,
)
from sim.media import AudioProfile, MediaSource, VideoProfile
from sim.receiver.core import EvidenceReceiver, EvidenceReceiverConfig
from sim.receiver.service import NO_DELAY
from sim.receiver.store import ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy

DEVICE = "cam-1"
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
RECORDING = "r000001-20261129T140000Z"
SMALL_VIDEO = VideoProfile(fps=10.0, bitrate_bps=80_000, gop_frames=10)
SMALL_AUDIO = AudioProfile(bitrate_bps=8_000, frame_duration_s=0.1)
TOPICS = Topics()


def make_segments(
    root: Path, *, device: str = DEVICE, count: int = 1, seconds: float = 1.0, seed: int = 1
) -> tuple[DeviceIdentity, list[ClosedSegment]]:
    """A device store in ``root`` with ``count`` closed segments of one recording."""
    root.mkdir(parents=True, exist_ok=True)
    identity = DeviceIdentity.load_or_create(root, device, seed=seed)
    store = EvidenceStore(root, identity, durable=False)
    media = MediaSource(seed, device, SMALL_VIDEO, SMALL_AUDIO)
    closed = []
    for index in range(count):
        start = SegmentStart(
            device=device,
            recording=RECORDING,
            index=index,
            start_trigger="button",
            trigger_source="front",
            requested_pre_roll_s=30.0,
            delivered_pre_roll_s=12.5,
            pts0_mono_s=100.0,
            pts0_utc=T0,
            clock_set=True,
            opened_pts_s=index * seconds,
        )
        segment = store.open_segment(start)
        for packet in media.packets_until((index + 1) * seconds):
            segment.append(packet, media.payload(packet))
        stop = "button" if index == count - 1 else None
        closed.append(store.close_segment(segment, SegmentClosing(stop_trigger=stop)))
    return identity, closed


def offer_of(closed: ClosedSegment, *, chunk_size: int = 1024, window: int = 8) -> Offer:
    """The offer a device makes for a closed segment."""
    return make_offer(closed.signed, chunk_size=chunk_size, window=window)


def chunks_of(offer: Offer, data: bytes) -> list[bytes]:
    """Every chunk message of ``data`` cut at the offer's chunk size, in order."""
    size = offer.chunk_size
    return [
        encode_chunk(offer.upload_id, offset, data[offset : offset + size])
        for offset in range(0, len(data), size)
    ]


def offer_topic(device: str = DEVICE) -> str:
    """The device's offer topic."""
    return TOPICS.device(device, DeviceChannel.UPLOAD_OFFER)


def chunk_topic(device: str = DEVICE) -> str:
    """The device's chunk topic."""
    return TOPICS.device(device, DeviceChannel.UPLOAD_CHUNK)


def acks(publishes: list[Publish], device: str = DEVICE) -> list[Ack]:
    """The acks in ``publishes``, checking they go to the device's ack topic at QoS 1."""
    topic = TOPICS.device(device, DeviceChannel.UPLOAD_ACK)
    assert all(p.topic == topic and p.qos == 1 and not p.retain for p in publishes)
    return [decode_ack(p.payload) for p in publishes]


class Rig:
    """A receiver on a directory, restartable: ``restart()`` builds a new one on the same disk."""

    def __init__(
        self,
        root: Path,
        *,
        mode: TrustMode = TrustMode.PINNED,
        config: EvidenceReceiverConfig | None = None,
    ) -> None:
        self.root = root
        self.mode = mode
        self.config = config
        self.receiver = self._build()

    def _build(self) -> EvidenceReceiver:
        store = ReceiverStore(self.root)
        return EvidenceReceiver(
            store, TrustPolicy(store.trust, self.mode), config=self.config, utc_now=lambda: T0
        )

    def restart(self) -> None:
        """The receiver process dies (memory lost, disk kept) and starts again."""
        self.receiver.close()
        self.receiver = self._build()

    def trust(self, identity: DeviceIdentity) -> None:
        """Enrol the device's key in the store's ``trust/``, as an operator would."""
        TrustStore(self.receiver.store.trust).enroll(
            identity.device_id, identity.key.public_bytes()
        )

    def offer(self, offer: Offer, device: str = DEVICE, now: float = 0.0) -> list[Ack]:
        """Deliver an offer; return the acks."""
        out = self.receiver.on_message(offer_topic(device), encode_control(offer), now)
        return acks(out, device)

    def chunk(self, payload: bytes, device: str = DEVICE, now: float = 0.0) -> list[Ack]:
        """Deliver a chunk message; return the acks."""
        return acks(self.receiver.on_message(chunk_topic(device), payload, now), device)

    def stored(self, closed: ClosedSegment) -> Path:
        """Where the receiver keeps that segment."""
        return self.receiver.store.segment_path(closed.manifest)

    def files(self) -> list[str]:
        """Every file under the store, relative (to spot a second copy or a leftover)."""
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )


async def upload_over_mqtt(
    client: aiomqtt.Client,
    closed: ClosedSegment,
    config: SenderConfig,
    *,
    on_ack: Callable[[Ack], Awaitable[None]] | None = None,
) -> Finished:
    """A device's upload of one segment, driven by ``UploadSender`` over an aiomqtt client.

    ``client`` must be connected; the ack topic is subscribed before the offer goes out.
    """
    device = closed.manifest.device
    data = closed.path.read_bytes()
    sender = UploadSender(closed.signed, max_message_size=1 << 20, config=config)
    await client.subscribe(TOPICS.device(device, DeviceChannel.UPLOAD_ACK), qos=1)
    loop = asyncio.get_running_loop()

    async def apply(actions: list[SenderAction]) -> Finished | None:
        for action in actions:
            if isinstance(action, SendOffer):
                await client.publish(offer_topic(device), action.payload, qos=1)
            elif isinstance(action, SendChunk):
                piece = data[action.offset : action.offset + action.length]
                chunk = encode_chunk(action.upload_id, action.offset, piece)
                await client.publish(chunk_topic(device), chunk, qos=1)
            else:
                return action
        return None

    finished = await apply(sender.start(loop.time()))
    messages = aiter(client.messages)
    while finished is None:
        try:
            async with asyncio.timeout_at(sender.next_deadline()):
                message = await anext(messages)
        except TimeoutError:
            finished = await apply(sender.handle_timeout(loop.time()))
            continue
        assert isinstance(message.payload, bytes)
        ack = decode_ack(message.payload)
        if on_ack is not None:
            await on_ack(ack)
        finished = await apply(sender.receive_ack(ack, loop.time()))
    return finished


def device_client(url: str, identifier: str = "test-device") -> aiomqtt.Client:
    """An MQTT 5 client for the device side of a test (``url`` is ``mqtt://host:port``)."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return aiomqtt.Client(
        host,
        int(port),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NO_DELAY,
    )
