"""The fleet's broker and evidence receiver: the ones given, or private and embedded ones.

Without a broker URL the fleet starts a private mosquitto (``sim.broker.PrivateBroker``) sized for
it: no persistence (a fleet's sessions need not survive the broker), no connection limit, and the
raised file-descriptor limit it inherits. The embedded evidence receiver (``sim.receiver``) runs in
the parent's event loop, stores under ``FleetConfig.receiver_store`` and trusts exactly the keys
the workers present for their cameras (``pinned``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Final

from device.errors import ConfigError
from device.mqtt.settings import BrokerSettings
from sim.broker import PrivateBroker
from sim.fleet.config import FleetConfig
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy

log = logging.getLogger(__name__)

PRIVATE_BROKER_CONFIG: Final = ("max_connections -1",)
RECEIVER_READY_S: Final = 30.0


@contextlib.asynccontextmanager
async def infrastructure(
    config: FleetConfig,
) -> AsyncIterator[tuple[BrokerSettings, ReceiverService | None]]:
    """The broker settings for the cameras and the embedded receiver (None if there is none)."""
    async with contextlib.AsyncExitStack() as stack:
        settings = config.broker
        if settings is None:
            broker = await stack.enter_async_context(
                PrivateBroker(persistence=False, extra_config=PRIVATE_BROKER_CONFIG)
            )
            if broker.kind != "mosquitto":
                log.warning(
                    "mosquitto is not installed: the in-process amqtt broker will not carry a "
                    "fleet; install mosquitto"
                )
            settings = broker.settings()
        if not config.embedded_receiver:
            yield settings, None
            return
        store = ReceiverStore(config.receiver_store)
        trust = TrustPolicy(store.trust, TrustMode.PINNED)
        service = ReceiverService(
            EvidenceReceiver(store, trust),
            settings,
            client_id="bwc-sim-fleet-receiver",
            fresh_session=True,  # trusts this run's cameras only: earlier runs' queue is noise
        )
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(service.run())
            ready = await _connected(service)
            try:
                if ready:
                    yield settings, service
            finally:
                task.cancel()
        service.core.close()
        if not ready:
            raise ConfigError(
                f"the embedded receiver could not connect to {settings.url} in "
                f"{RECEIVER_READY_S:g} s"
            )


async def _connected(service: ReceiverService) -> bool:
    try:
        async with asyncio.timeout(RECEIVER_READY_S):
            await service.connected.wait()
    except TimeoutError:
        return False
    return True


def trust_keys(receiver: ReceiverService | None, keys: Mapping[str, bytes]) -> None:
    """Enrol the cameras' keys at the embedded receiver (none without one)."""
    if receiver is None:
        return
    for device, key in keys.items():
        receiver.core.present_key(device, key)
