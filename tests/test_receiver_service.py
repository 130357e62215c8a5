"""The evidence receiver on a real mosquitto: a device-side ``UploadSender`` over aiomqtt uploads
real signed segments; the receiver stores and verifies them, survives being killed mid-upload
(SIGKILL of the ``bwc-sim receiver`` process) and a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from device.mqtt.settings import Backoff, parse_broker_url
from protocol.upload import Ack, SenderConfig, UploadResult
from protocol.upload.wire import encode_control
from sim.broker import PrivateBroker
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy
from sim.receiver.verify import verify_receiver_store
from tests.mqtt_support import mosquitto, wait_for  # noqa: F401
from tests.receiver_support import (
    device_client,
    make_segments,
    offer_of,
    offer_topic,
    upload_over_mqtt,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]
FAST = SenderConfig(chunk_size=1024, window=4, ack_timeout_s=0.5, max_retries=20)
READY_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def receiver_service(store_dir: Path, url: str) -> AsyncIterator[ReceiverService]:
    store = ReceiverStore(store_dir)
    core = EvidenceReceiver(store, TrustPolicy(store.trust, TrustMode.TOFU))
    broker = parse_broker_url(url, backoff=Backoff(base_s=0.05, cap_s=0.2))
    service = ReceiverService(core, broker)
    task = asyncio.create_task(service.run())
    try:
        await wait_for(service.connected.wait(), timeout_s=READY_TIMEOUT_S, what="subscribed")
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        core.close()


async def test_a_segment_uploaded_over_mqtt_is_stored_and_verified(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
) -> None:
    identity, closed = make_segments(tmp_path / "device", count=2)
    async with receiver_service(tmp_path / "store", mosquitto.url) as service:
        service.core.present_key(identity.device_id, identity.key.public_bytes())
        async with device_client(mosquitto.url) as client:
            for segment in closed:
                finished = await wait_for(upload_over_mqtt(client, segment, FAST), what="upload")
                assert finished.result is UploadResult.VERIFIED
        assert service.core.counters.verified == 2
        for segment in closed:
            stored = service.core.store.segment_path(segment.manifest)
            assert stored.read_bytes() == segment.path.read_bytes()
    assert verify_receiver_store(tmp_path / "store").ok


async def test_the_receiver_reconnects_after_a_broker_restart(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
) -> None:
    identity, closed = make_segments(tmp_path / "device")
    async with receiver_service(tmp_path / "store", mosquitto.url) as service:
        service.core.present_key(identity.device_id, identity.key.public_bytes())
        await mosquitto.stop()
        await mosquitto.start()
        await wait_for(_reconnected(service), timeout_s=READY_TIMEOUT_S, what="reconnection")
        async with device_client(mosquitto.url) as client:
            finished = await wait_for(upload_over_mqtt(client, closed[0], FAST), what="upload")
        assert finished.result is UploadResult.VERIFIED


async def _reconnected(service: ReceiverService) -> None:
    while service.connections < 2 or not service.connected.is_set():
        await asyncio.sleep(0.01)


class ReceiverProcess:
    """``bwc-sim receiver`` as a child process, killable with SIGKILL."""

    def __init__(self, store: Path, url: str, key_file: Path) -> None:
        self.args = [
            *("-m", "sim.cli", "receiver", "--broker", url, "--store", str(store)),
            *("--trust-key", str(key_file), "--json"),
        ]
        self.receipts: list[dict[str, object]] = []
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        assert self.process.stderr is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            while b"serving" not in (line := await self.process.stderr.readline()):
                assert line, "the receiver exited before it was ready"

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self._collect()

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self._collect()

    async def _collect(self) -> int:
        assert self.process is not None
        out, _ = await self.process.communicate()
        self.receipts += [json.loads(line) for line in out.splitlines()]
        assert self.process.returncode is not None
        return self.process.returncode


async def test_a_receiver_killed_mid_upload_completes_it_exactly_once(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
) -> None:
    _, closed = make_segments(tmp_path / "device", seconds=4.0)
    segment = closed[0]
    receiver = ReceiverProcess(tmp_path / "store", mosquitto.url, tmp_path / "device/device.json")
    await receiver.start()
    killed_at: list[int] = []

    async def kill_at_half(ack: Ack) -> None:
        if not killed_at and ack.committed >= segment.manifest.size // 2:
            killed_at.append(ack.committed)
            await receiver.kill()
            await receiver.start()  # chunks sent meanwhile wait in its persistent session

    try:
        async with device_client(mosquitto.url) as client:
            finished = await wait_for(
                upload_over_mqtt(client, segment, FAST, on_ack=kill_at_half),
                timeout_s=20,
                what="upload across a receiver kill",
            )
    finally:
        code = await receiver.stop()
    assert code == 0
    assert finished.result is UploadResult.VERIFIED
    assert killed_at
    assert 0 < killed_at[0] < segment.manifest.size
    store = tmp_path / "store"
    stored = sorted(store.rglob("*.bwcseg"))
    assert len(stored) == 1
    assert stored[0].read_bytes() == segment.path.read_bytes()
    assert [r["sha256"] for r in receiver.receipts] == [segment.manifest.sha256]
    assert not any((store / "incoming").iterdir())
    assert verify_receiver_store(store).ok


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("fresh", [False, True])
async def test_a_fresh_session_drops_what_was_queued_for_an_earlier_receiver(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
    protocol: Literal["5", "3.1.1"],
    fresh: bool,
) -> None:
    """An offer published while the receiver was away reaches the next receiver with the same
    client ID, unless that one starts a fresh session (a fleet's embedded receiver)."""
    identity, closed = make_segments(tmp_path / "device", count=2)
    stale, today = closed
    broker = parse_broker_url(mosquitto.url, protocol=protocol, backoff=Backoff(0.05, 0.2))

    async def serve(
        store: str, *, fresh_session: bool
    ) -> tuple[ReceiverService, asyncio.Task[None]]:
        receiver_store = ReceiverStore(tmp_path / store)
        core = EvidenceReceiver(receiver_store, TrustPolicy(receiver_store.trust, TrustMode.TOFU))
        service = ReceiverService(core, broker, fresh_session=fresh_session)
        task = asyncio.create_task(service.run())
        await wait_for(service.connected.wait(), timeout_s=READY_TIMEOUT_S, what="subscribed")
        return service, task

    async def stop(service: ReceiverService, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        service.core.close()

    await stop(*await serve("earlier", fresh_session=False))  # leaves its session behind
    async with device_client(mosquitto.url) as client:
        await client.publish(
            offer_topic(identity.device_id), encode_control(offer_of(stale)), qos=1
        )
        service, task = await serve("today", fresh_session=fresh)
        try:
            service.core.present_key(identity.device_id, identity.key.public_bytes())
            finished = await wait_for(upload_over_mqtt(client, today, FAST), what="upload")
            assert finished.result is UploadResult.VERIFIED
            # The broker delivers a session's queue before anything published after the
            # connection, so the stale offer, if it came at all, came before today's.
            assert service.core.counters.offers == (1 if fresh else 2)
        finally:
            await stop(service, task)
