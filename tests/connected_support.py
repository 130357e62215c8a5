"""Support for the connected-camera tests: a live camera, evidence receivers, the delivery check.

The tests run the whole chain on a real broker: ``sim.live.LiveCamera`` (the daemon: camera on the
loop's clock, journal, upload manager, MQTT link) uploads to an evidence receiver, either in this
process (``EmbeddedReceiver``, restartable on the same store) or as a ``bwc-sim receiver`` child
process (``ReceiverProcess``, killable with SIGKILL).

``check_delivery`` is the property every test ends with: each segment the camera recorded (the
``segment_closed`` and ``segment_recovered`` records of its audit log, the camera's own account)
reached the receiver exactly once, byte for byte (SHA-256 of the stored file against the
manifest and both receipts), and left the camera only after verification (a receipt in
``uploads/verified/`` for each, and neither its file nor its manifest left in ``recordings/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.identity import DeviceIdentity
from device.mqtt.settings import Backoff, BrokerSettings, ProtocolName, parse_broker_url
from device.store import segment_name
from device.uploads import UploadConfig
from device.uploads.state import Receipt as DeviceReceipt
from sim.live import LiveCamera, LiveOptions
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import Receipt, ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy
from sim.receiver.verify import verify_receiver_store
from sim.scenario import Scenario, parse_scenario
from tests.mqtt_support import wait_for, wait_until

ROOT: Final = Path(__file__).resolve().parent.parent
DEVICE: Final = "cam-c1"
SEED: Final = 5
EPOCH: Final = dt.datetime(2026, 11, 29, 14, 0, tzinfo=dt.UTC)
FAST: Final = Backoff(base_s=0.05, cap_s=0.5, stable_after_s=2.0)
"""Reconnect quickly: the tests restart brokers and receivers on purpose."""
WAIT_S: Final = 45.0
"""Generous bound on every wait (a noisy 2-core CI machine); a healthy run takes a few seconds."""
READY_S: Final = 20.0
"""Bound on a child process or a service getting ready."""

Step = tuple[float, str, Mapping[str, object]]
SegmentKey = tuple[str, int]


def scenario_text(
    steps: Iterable[Step],
    *,
    duration: float,
    segment_s: float = 5.0,
    pre_event_s: float = 1.0,
    device: str = DEVICE,
    seed: int = SEED,
) -> str:
    """A scenario file: one camera at ``720p30-low`` (about 2 MB per 5 s segment) and ``steps``."""
    lines = [
        "[scenario]",
        'name = "connected test"',
        f"duration = {duration}",
        "[device]",
        f'id = "{device}"',
        f"seed = {seed}",
        "[policy]",
        f"pre_event_s = {pre_event_s}",
        f"segment_s = {segment_s}",
        "[media]",
        'video = "720p30-low"',
    ]
    for at, action, params in steps:
        lines += ["[[timeline]]", f"at = {at}", f'do = "{action}"']
        lines += [f"{key} = {json.dumps(value)}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


def scenario(steps: Iterable[Step], **options: Any) -> Scenario:
    """``scenario_text`` parsed."""
    return parse_scenario(scenario_text(steps, **options), "<connected test>")


def recording(start: float, stop: float) -> list[Step]:
    """Power on at 0, record from ``start`` (double press) to ``stop`` (hold, with a reason)."""
    return [
        (0, "power_on", {}),
        (start, "double_press", {}),
        (stop, "hold", {"reason": "call ended"}),
    ]


def broker_settings(url: str, *, protocol: ProtocolName = "5") -> BrokerSettings:
    """The broker at ``url`` with quick reconnects."""
    return parse_broker_url(url, protocol=protocol, backoff=FAST, connect_timeout_s=5.0)


def live_camera(
    plan: Scenario,
    data_dir: Path,
    settings: BrokerSettings,
    *,
    speed: float = 10.0,
    upload: UploadConfig | None = None,
) -> LiveCamera:
    """A live camera playing ``plan`` at ``speed`` on ``data_dir`` (kept across restarts)."""
    options = LiveOptions(
        data_dir=data_dir, broker=settings, speed=speed, upload=upload or UploadConfig()
    )
    return LiveCamera(plan, options, utc_now=EPOCH)


@contextlib.asynccontextmanager
async def playing(
    live: LiveCamera, *, until_uploaded: bool
) -> AsyncIterator[tuple[asyncio.Task[None], asyncio.Event]]:
    """Play ``live`` in a task for the block; stop it (and wait) at the end, whatever happened."""
    stop = asyncio.Event()
    task = asyncio.create_task(live.play(stop, until_uploaded=until_uploaded))
    try:
        yield task, stop
    finally:
        stop.set()
        if not task.done():
            try:
                async with asyncio.timeout(READY_S):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class EmbeddedReceiver:
    """An evidence receiver in this process, on ``store_dir``; ``start`` again after ``stop``.

    ``receipts`` lists every upload newly verified, across restarts: a segment verified twice
    would appear twice.
    """

    def __init__(self, store_dir: Path, settings: BrokerSettings, identity: DeviceIdentity):
        self.store_dir = store_dir
        self.settings = settings
        self.identity = identity
        self.receipts: list[Receipt] = []
        self.service: ReceiverService | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> ReceiverService:
        """Build a fresh receiver on the store, enrol the camera's key, wait until subscribed."""
        store = ReceiverStore(self.store_dir)
        core = EvidenceReceiver(
            store,
            TrustPolicy(store.trust, TrustMode.PINNED),
            on_verified=self.receipts.append,  # on the disk thread; list.append is atomic
        )
        core.present_key(self.identity.device_id, self.identity.key.public_bytes())
        self.service = ReceiverService(core, self.settings)
        self._task = asyncio.create_task(self.service.run())
        await wait_for(self.service.connected.wait(), timeout_s=READY_S, what="receiver ready")
        return self.service

    async def stop(self) -> None:
        """Cancel the service (it finishes the message being stored) and close its files."""
        task, service = self._task, self.service
        self._task = self.service = None
        if task is None or service is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        service.core.close()


@contextlib.asynccontextmanager
async def embedded_receiver(
    store_dir: Path, settings: BrokerSettings, identity: DeviceIdentity
) -> AsyncIterator[EmbeddedReceiver]:
    """A started ``EmbeddedReceiver``, stopped at the end of the block."""
    receiver = EmbeddedReceiver(store_dir, settings, identity)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def identity_for(data_dir: Path, device: str = DEVICE, seed: int = SEED) -> DeviceIdentity:
    """The camera's identity in ``data_dir``, created exactly as the camera itself would."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return DeviceIdentity.load_or_create(data_dir, device, seed=seed)


def child_env() -> dict[str, str]:
    """The environment of a child ``python -m sim.cli``: this checkout on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class ReceiverProcess:
    """``bwc-sim receiver --json`` as a child process; ``kill`` is SIGKILL, ``start`` again.

    ``receipts`` collects the receipts every incarnation printed (one per newly verified upload).
    """

    def __init__(self, store: Path, url: str, key_file: Path) -> None:
        self.args = [
            *("-m", "sim.cli", "receiver", "--broker", url, "--store", str(store)),
            *("--trust-key", str(key_file), "--json"),
        ]
        self.receipts: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it and wait for its ``serving`` line (it is subscribed then)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        stderr = self.process.stderr
        assert stderr is not None
        async with asyncio.timeout(READY_S):
            while b"serving" not in (line := await stderr.readline()):
                assert line, "the receiver exited before it was ready"

    async def kill(self) -> None:
        """SIGKILL: no clean disconnect, nothing flushed that was not already."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self._collect()

    async def stop(self) -> int:
        """SIGTERM; its exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self._collect()

    async def _collect(self) -> int:
        assert self.process is not None
        async with asyncio.timeout(READY_S):
            out, _ = await self.process.communicate()
        self.receipts += [json.loads(line) for line in out.splitlines() if line.strip()]
        assert self.process.returncode is not None
        return self.process.returncode


# -- the delivery check -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """A segment as the camera's audit log describes it at close (or recovery)."""

    sha256: str
    size: int
    recovered: bool


def audit_records(data_dir: Path) -> list[dict[str, Any]]:
    """The camera's audit records (a torn last line, as a SIGKILL may leave, is skipped)."""
    records = []
    for line in (data_dir / "audit.log").read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def recorded_segments(data_dir: Path) -> dict[SegmentKey, Recorded]:
    """Every segment the camera closed or recovered, by (recording, index), from its audit log."""
    out: dict[SegmentKey, Recorded] = {}
    for record in audit_records(data_dir):
        kind = record["kind"]
        if kind in ("segment_closed", "segment_recovered"):
            key = (record["recording"], record["index"])
            assert key not in out, f"segment {key} closed twice"
            out[key] = Recorded(record["sha256"], record["size"], kind == "segment_recovered")
    return out


def device_receipts(data_dir: Path) -> dict[SegmentKey, DeviceReceipt]:
    """The camera's receipts of verified uploads (``uploads/verified/``)."""
    out = {}
    for path in sorted((data_dir / "uploads" / "verified").glob("*.json")):
        receipt = msgspec.json.decode(path.read_bytes(), type=DeviceReceipt)
        out[(receipt.recording, receipt.index)] = receipt
    return out


def segments_left(data_dir: Path) -> list[Path]:
    """Segment files and manifests still in the camera's ``recordings/``."""
    recordings = data_dir / "recordings"
    return sorted([*recordings.glob("*/*.bwcseg"), *recordings.glob("*/*.manifest.json")])


def all_delivered(data_dir: Path) -> bool:
    """Whether every recorded segment has a receipt on the camera and none is left there."""
    recorded = recorded_segments(data_dir)
    return (
        bool(recorded)
        and not segments_left(data_dir)
        and set(device_receipts(data_dir)) >= set(recorded)
    )


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_delivery(
    data_dir: Path,
    store_dir: Path,
    *,
    device: str = DEVICE,
    verifications: Iterable[SegmentKey] | None = None,
) -> dict[SegmentKey, Recorded]:
    """Assert the delivery property (module docstring); return what was recorded.

    ``verifications`` lists (recording, index) of every verification the receiver(s) made, across
    restarts, when the test could watch them: each segment must appear exactly once.
    """
    recorded = recorded_segments(data_dir)
    assert recorded, "the camera recorded nothing"
    # Left the camera, and only after a verified upload: a receipt for each, nothing left behind.
    left = segments_left(data_dir)
    assert left == [], f"still on the camera: {left}"
    assert not list((data_dir / "uploads" / "segments").glob("*.json")), "status files left"
    receipts = device_receipts(data_dir)
    assert set(receipts) == set(recorded), (
        f"receipts {sorted(receipts)}, recorded {sorted(recorded)}"
    )
    # At the receiver: byte-identical, one stored copy and one receipt per segment.
    stored_root = store_dir / "devices" / device / "recordings"
    stored = sorted(stored_root.glob("*/*.bwcseg"))
    at_receiver = {(p.parent.name, int(p.stem.removeprefix("seg-"))) for p in stored}
    assert at_receiver == set(recorded), (
        f"stored {sorted(at_receiver)}, recorded {sorted(recorded)}"
    )
    receiver_receipts = [
        msgspec.json.decode(p.read_bytes(), type=Receipt)
        for p in sorted((store_dir / "receipts").glob("*.json"))
    ]
    per_key = Counter((r.recording, r.index) for r in receiver_receipts if r.device == device)
    assert per_key == Counter(set(recorded)), f"receiver receipts per segment: {per_key}"
    by_key = {(r.recording, r.index): r for r in receiver_receipts}
    for key, segment in recorded.items():
        rec, index = key
        path = stored_root / rec / segment_name(index)
        assert sha256_of(path) == segment.sha256, f"{key}: stored bytes differ"
        assert path.stat().st_size == segment.size, f"{key}: stored size differs"
        assert receipts[key].sha256 == segment.sha256 == by_key[key].sha256, f"{key}: sha256"
        assert receipts[key].size == segment.size == by_key[key].size, f"{key}: size"
        assert receipts[key].upload_id == by_key[key].upload_id, f"{key}: upload_id"
        assert receipts[key].signed_manifest.decode().sha256 == segment.sha256, f"{key}: manifest"
    # The camera deleted each segment once (a crash between receipt and deletion may add one
    # ``repaired`` record, never a second plain one).
    uploaded = Counter(
        (r["recording"], r["index"])
        for r in audit_records(data_dir)
        if r["kind"] == "segment_uploaded" and not r.get("repaired")
    )
    assert all(count <= 1 for count in uploaded.values()), f"deleted twice: {uploaded}"
    if verifications is not None:
        made = Counter(verifications)
        assert made == Counter(set(recorded)), f"verifications per segment: {made}"
    parts = sorted((store_dir / "incoming").glob("*.part"))
    assert parts == [], f"uploads left in progress at the receiver: {parts}"
    report = verify_receiver_store(store_dir)
    assert report.ok, f"bwc-sim verify of the receiver store: {report}"
    return recorded


def keys_of(receipts: Iterable[Receipt]) -> list[SegmentKey]:
    """(recording, index) of receiver receipts."""
    return [(r.recording, r.index) for r in receipts]


def json_keys_of(receipts: Iterable[Mapping[str, Any]]) -> list[SegmentKey]:
    """(recording, index) of receipts printed as JSON by ``bwc-sim receiver --json``."""
    return [(str(r["recording"]), int(r["index"])) for r in receipts]


# -- watching the camera's topics ---------------------------------------------------------------


class Subscriber:
    """A backend watching the camera's topics through a persistent MQTT 5 session.

    It subscribes at QoS 1 with clean start off, so the broker keeps queuing for it while it is
    disconnected (a broker restart), and reconnects by itself until the block ends. ``received``
    holds (topic, decoded JSON) in arrival order.
    """

    def __init__(self, host: str, port: int, topics: Iterable[str], *, client_id: str) -> None:
        self.host, self.port = host, port
        self.topics = tuple(topics)
        self.client_id = client_id
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = asyncio.Event()
        self.client: aiomqtt.Client | None = None

    def on(self, topic: str) -> list[dict[str, Any]]:
        """What arrived on ``topic`` so far, in order."""
        return [message for where, message in self.received if where == topic]

    async def wait(self, topic: str, what: str, **fields: object) -> dict[str, Any]:
        """The first message on ``topic`` whose fields equal ``fields`` (waits for it)."""

        def found() -> dict[str, Any] | None:
            for message in self.on(topic):
                if all(message.get(key) == value for key, value in fields.items()):
                    return message
            return None

        await wait_until(lambda: found() is not None, timeout_s=WAIT_S, what=what)
        message = found()
        assert message is not None
        return message

    def _new_client(self) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
        )

    async def _run(self) -> None:
        while True:
            try:
                async with self._new_client() as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.client = client
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.received.append((message.topic.value, json.loads(payload)))
            except aiomqtt.MqttError:
                self.client = None
                self.subscribed.clear()
                await asyncio.sleep(0.05)  # the poll interval of reconnecting, not a wait

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 through the watching connection."""
        await wait_for(self.subscribed.wait(), timeout_s=WAIT_S, what="observer connected")
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def subscriber(
    host: str, port: int, topics: Iterable[str], *, client_id: str = "test-observer"
) -> AsyncIterator[Subscriber]:
    """A connected ``Subscriber`` for the block."""
    watcher = Subscriber(host, port, topics, client_id=client_id)
    task = asyncio.create_task(watcher._run())
    try:
        await wait_for(watcher.subscribed.wait(), timeout_s=READY_S, what="observer subscribed")
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
