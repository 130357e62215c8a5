"""``bwc-sim fleet``: many connected cameras in real time, for load-testing a broker and backend.

``--count N`` cameras (IDs ``cam-00001`` on, ``--id-prefix``, ``--id-offset``), each the real
camera of ``bwc-sim run`` with its own data directory and seed, on one event loop per worker
process (``--workers W``). Every camera buffers and sends telemetry every ``--telemetry-interval``
seconds; ``--recording-fraction`` of them (a seeded choice) also record and upload: a recording of
20-40 s at a random time, or what ``--scenario FILE`` says. Connections are staggered
(``--connect-rate`` per second). After ``--duration`` seconds every camera stops cleanly and the
summary is printed (``--json``: one JSON object on stdout).

Without ``--broker`` a private mosquitto and an embedded evidence receiver run too; with
``--broker URL`` the cameras use that broker and whatever receiver serves it (``--receiver
embedded`` runs ours against it as well). Exit 0 when the run had no error, 1 otherwise, 2 for bad
input. See docs/fleet.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from rich.console import Console

from device.errors import ConfigError, DeviceError
from sim.cli_broker import add_broker_options, broker_settings
from sim.cli_logging import add_verbose_option, configure_logging
from sim.fleet.config import DEFAULT_CONNECT_RATE, FleetConfig
from sim.fleet.process import check_fd_limit, data_dir_lock
from sim.fleet.runner import FleetError, run_fleet
from sim.fleet.table import live_table, print_summary


def register(commands: Any) -> None:
    """Add the ``fleet`` subcommand."""
    parser = commands.add_parser(
        "fleet",
        help="run many connected cameras in real time (a load test for a broker and backend)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, required=True, help="how many cameras")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds to run (default 120)"
    )
    parser.add_argument("--broker", metavar="URL", help="use this broker: mqtt://host:port")
    add_broker_options(parser)
    parser.add_argument(
        "--receiver",
        choices=["embedded", "none"],
        help="run an embedded evidence receiver (default: only with the private broker)",
    )
    parser.add_argument("--scenario", type=Path, help="what the recording cameras play (TOML)")
    parser.add_argument(
        "--recording-fraction",
        type=float,
        default=0.05,
        help="share of the cameras that record and upload (default 0.05)",
    )
    parser.add_argument(
        "--telemetry-interval", type=float, default=10.0, help="seconds between telemetry"
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=DEFAULT_CONNECT_RATE,
        help=f"camera connections started per second (default {DEFAULT_CONNECT_RATE:g})",
    )
    parser.add_argument("--seed", type=int, default=1, help="the fleet's seed (default 1)")
    parser.add_argument("--id-prefix", default="cam-", help='device ID prefix (default "cam-")')
    parser.add_argument("--id-offset", type=int, default=1, help="first ID number (default 1)")
    parser.add_argument("--id-width", type=int, default=5, help="ID number digits (default 5)")
    parser.add_argument("--data-dir", type=Path, help="where the cameras' directories go")
    parser.add_argument("--store", type=Path, help="the embedded receiver's store")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_verbose_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the fleet; 0 without errors, 1 with, 2 for bad input."""
    configure_logging(args.verbose)
    console = Console(stderr=True)
    try:
        config = _config(args)
        check_fd_limit(config.count, config.workers, private_broker=config.broker is None)
    except DeviceError as exc:
        console.print(f"bwc-sim fleet: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    try:
        with data_dir_lock(config.data_dir):
            result = asyncio.run(_main(config, console, args))
    except (FleetError, DeviceError, BaseExceptionGroup) as exc:
        error = _cause(exc)
        if error is None:
            raise
        console.print(f"bwc-sim fleet: {error}", markup=False, highlight=False, soft_wrap=True)
        return 2 if isinstance(error, ConfigError) else 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_summary(console, result)
    return 0 if result["errors"] == 0 else 1


def _config(args: argparse.Namespace) -> FleetConfig:
    """The validated configuration; ``DeviceError`` (exit 2) names what is wrong."""
    broker = None if args.broker is None else broker_settings(args.broker, args)
    receiver = args.receiver or ("embedded" if broker is None else "none")
    return FleetConfig(
        count=args.count,
        workers=args.workers,
        duration_s=args.duration,
        seed=args.seed,
        id_prefix=args.id_prefix,
        id_offset=args.id_offset,
        id_width=args.id_width,
        recording_fraction=args.recording_fraction,
        telemetry_interval_s=args.telemetry_interval,
        connect_rate=args.connect_rate,
        broker=broker,
        embedded_receiver=receiver == "embedded",
        store=args.store,
        scenario_file=args.scenario,
        data_dir=args.data_dir or _default_dir(),
    )


def _cause(exc: BaseException) -> FleetError | DeviceError | None:
    """The fleet's own error in ``exc`` (through task groups it comes wrapped), else None."""
    if isinstance(exc, FleetError | DeviceError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _cause(inner)) is not None:
                return found
    return None


def _default_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bwc-sim" / "fleet"


async def _main(config: FleetConfig, console: Console, args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    where = "a private broker" if config.broker is None else config.broker.url
    console.print(
        f"bwc-sim fleet: {config.count} cameras ({config.device_id(0)} .. "
        f"{config.device_id(config.count - 1)}), {config.workers} worker(s), on {where}; "
        f"data {config.data_dir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    with live_table(console, quiet=args.json or not console.is_terminal) as table:
        return await run_fleet(config, stop, view=table.update, verbose=args.verbose)
