"""``bwc-sim receiver``: the evidence receiver, serving every camera's uploads over MQTT.

Subscribes to ``bwc/v1/dev/+/upload/offer`` and ``.../upload/chunk`` with a persistent session,
stores verified segments and their signed manifests under ``--store DIR`` (docs/receiver.md), and
answers every offer and chunk with an ack. Runs until Ctrl-C or SIGTERM (exit 0).

Trust: ``--trust pinned`` (the default) accepts only keys in ``DIR/trust/{device}.pub`` and those
given with ``--trust-key``; ``--trust tofu`` also enrols the first key presented for a new device.
``--trust-key`` takes a camera's ``device.json`` or a ``{device}.pub`` file, or a directory: every
``device.json`` below it (a fleet's ``--data-dir`` enrols the whole fleet).

With ``--json`` one JSON object per verified segment is printed on stdout (the receipt). Exit 2
on bad usage (the message names the option).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

from device.errors import ConfigError, StorageError
from protocol.errors import LocalProtocolError
from protocol.topics import DEFAULT_PREFIX, Topics
from sim.cli_broker import add_broker_options, broker_settings
from sim.cli_logging import add_verbose_option, configure_logging
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import DEFAULT_CLIENT_ID, ReceiverService
from sim.receiver.store import Receipt, ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy, present_all

EXIT_OK, EXIT_USAGE = 0, 2


def register(commands: Any) -> None:
    """Add the ``receiver`` subcommand."""
    parser = commands.add_parser(
        "receiver",
        help="run the evidence receiver: store and verify uploads from any number of cameras",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--broker", required=True, metavar="URL", help="mqtt://host:port or mqtts://"
    )
    parser.add_argument("--store", required=True, type=Path, metavar="DIR", help="receiver store")
    parser.add_argument(
        "--trust", choices=[m.value for m in TrustMode], default=TrustMode.PINNED.value,
        help="key trust policy (default: pinned)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-key", action="append", type=Path, default=[], metavar="FILE",
        help="trust this device key (device.json or {device}.pub; a directory: every "
        "device.json below it, e.g. a fleet's --data-dir); repeatable",
    )  # fmt: skip
    add_broker_options(parser)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="MQTT client ID (fixed)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix (default: bwc)")
    parser.add_argument("--json", action="store_true", help="print each receipt as JSON on stdout")
    add_verbose_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the receiver from the options, then serve until interrupted."""
    configure_logging(args.verbose)
    try:
        service = _build(args)
    except (ConfigError, StorageError, LocalProtocolError) as exc:
        print(f"bwc-sim receiver: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_serve(service, args.store))
    service.core.close()
    print("bwc-sim receiver: stopped", file=sys.stderr)
    return EXIT_OK


def _build(args: argparse.Namespace) -> ReceiverService:
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigError(f"--ca-file {args.ca_file}: no such file")
    broker = broker_settings(args.broker, args)
    topics = Topics(args.prefix)
    store = ReceiverStore(args.store)
    trust = TrustPolicy(store.trust, TrustMode(args.trust))
    for device, key_id in present_all(trust, args.trust_key):
        logging.getLogger(__name__).info("trusting key %s for %s", key_id, device)
    on_verified = _print_receipt if args.json else None
    core = EvidenceReceiver(store, trust, topics=topics, on_verified=on_verified)
    return ReceiverService(core, broker, client_id=args.client_id)


def _print_receipt(receipt: Receipt) -> None:
    print(json.dumps(msgspec.to_builtins(receipt), sort_keys=True), flush=True)


async def _serve(service: ReceiverService, store: Path) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    broker = service.broker
    async with asyncio.TaskGroup() as group:
        group.create_task(service.run())
        await service.connected.wait()
        print(
            f"bwc-sim receiver: serving {broker.host}:{broker.port} as {service.client_id}, "
            f"store {store}",
            file=sys.stderr,
            flush=True,
        )
