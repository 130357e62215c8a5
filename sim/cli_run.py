"""``bwc-sim run``: one connected camera in real time; a private broker and receiver by default.

Without ``--broker`` it starts a private broker (mosquitto on a free port when installed, else the
pure-Python amqtt in this process, with a warning) and an embedded evidence receiver storing under
``--store``, so nothing needs setting up. With ``--broker mqtt://host:port`` (or ``mqtts://``) it
uses that broker and whatever receiver serves it.

``--scenario FILE`` plays a scenario in real time (``--speed N``: N times faster) and exits 0
once the scenario is over and every recording is verified by the receiver, printing the scenario
report with an ``uploads`` object (``--json``: one JSON object on stdout). Without ``--scenario``
the camera buffers until Ctrl-C. Ctrl-C shuts down cleanly: the recording is stopped, segments
closed, the journal flushed. Exit 1 if some segment was rejected or not verified, 2 for bad input.

``--backend NAME`` picks the hardware (``sim``, the default: in memory; ``serial``: a bench
microcontroller on ``--port URL`` at ``--baud N``; or a plug-in's). With ``sim`` the scenario's
``button``, ``input`` and ``speed`` actions reach the camera through the simulated hardware; with
any other backend the hardware plays them (``bwc-sim bench-mcu`` reads the same scenario file)
and ``--speed`` must be 1. Hardware that cannot be opened is exit 2, with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from device.backends.base import HardwareBackend
from device.backends.registry import backend_class, open_backend
from device.backends.shell import check_real_time
from device.errors import ConfigError, DeviceError, HardwareError
from device.identity import IDENTITY_FILE, DeviceIdentity, read_identity
from device.mqtt.settings import BrokerSettings
from device.store import ClosedSegment, manifest_path, read_signed_manifest, segment_name
from device.uploads import Receipt, UploadConfig
from sim.broker import PrivateBroker
from sim.cli_broker import add_broker_options, broker_settings
from sim.cli_logging import add_verbose_option, configure_logging
from sim.live import LiveCamera, LiveOptions, idle_scenario
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy
from sim.report import build_report
from sim.scenario import Scenario, format_time, load_scenario

DEFAULT_BAUD: Final = 115200


def register(commands: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = commands.add_parser(
        "run",
        help="run one connected camera in real time (private broker and receiver by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", type=Path, help="scenario TOML to play (docs/scenarios.md)")
    parser.add_argument("--speed", type=float, default=1.0, help="play N times faster (default 1)")
    parser.add_argument("--data-dir", type=Path, help="the camera's data directory")
    parser.add_argument("--store", type=Path, help="the embedded receiver's store")
    parser.add_argument("--broker", metavar="URL", help="use this broker: mqtt://host:port")
    add_broker_options(parser)
    parser.add_argument(
        "--chunk-size", type=int, help="upload chunk bytes (default: the protocol's)"
    )
    parser.add_argument("--bandwidth-mbps", type=float, help="cap the upload (25 = a dock)")
    parser.add_argument(
        "--backend",
        default="sim",
        metavar="NAME",
        help="hardware backend: sim (default), serial, or a plug-in's name",
    )
    parser.add_argument(
        "--port", metavar="URL", help="the hardware's port: /dev/ttyUSB0, socket://host:port"
    )
    parser.add_argument(
        "--baud", type=int, metavar="N", help=f"serial baud rate (default {DEFAULT_BAUD})"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--init",
        action="store_true",
        help="only create the camera's identity in --data-dir (to enrol its key), then exit",
    )
    add_verbose_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the camera; 0 when everything recorded was verified, 1 if not, 2 for bad input."""
    configure_logging(args.verbose)
    console = Console(stderr=True)
    try:
        scenario = (
            load_scenario(args.scenario)
            if args.scenario
            else idle_scenario(_device_of(args.data_dir), 1)
        )
        if scenario.fleet is not None:
            raise ConfigError(
                f"{args.scenario} declares a fleet of cameras: play it in virtual time with "
                "bwc-sim scenario; bwc-sim run runs one camera"
            )
        if any(entry.action == "power_loss" for entry in scenario.timeline):
            raise ConfigError(
                "power_loss is played in virtual time only (bwc-sim scenario); in real time "
                "kill the process instead"
            )
        if not 0.01 <= args.speed <= 1000:
            raise ConfigError(f"--speed must be from 0.01 to 1000, got {args.speed}")
        broker = None if args.broker is None else broker_settings(args.broker, args)
        upload = _upload_config(args)
        backend = _backend(args)
    except DeviceError as exc:
        console.print(f"bwc-sim run: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    data_dir = args.data_dir or _default_dir(scenario.device.id)
    store = args.store or data_dir.parent / f"{scenario.device.id}-receiver"
    if args.init:
        data_dir.mkdir(parents=True, exist_ok=True)
        identity = DeviceIdentity.load_or_create(
            data_dir, scenario.device.id, seed=scenario.device.seed
        )
        print(data_dir / "device.json")
        console.print(f"bwc-sim run: {identity.device_id} key {identity.key.key_id}", markup=False)
        return 0
    report: dict[str, Any] = {}
    try:
        with contextlib.suppress(KeyboardInterrupt):
            report = asyncio.run(
                _main(
                    args,
                    console,
                    scenario=scenario,
                    data_dir=data_dir,
                    store=store,
                    broker=broker,
                    upload=upload,
                    backend=backend,
                )
            )
    except (HardwareError, ExceptionGroup) as exc:
        error = _hardware_error(exc)
        if error is None:
            raise
        console.print(f"bwc-sim run: {error}", markup=False, highlight=False, soft_wrap=True)
        return 2
    if not report:
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_human(console, report)
    uploads = report["uploads"]
    return 0 if uploads["pending"] == 0 and uploads["rejected"] == 0 else 1


def _upload_config(args: argparse.Namespace) -> UploadConfig:
    options: dict[str, Any] = {}
    if args.chunk_size is not None:
        options["chunk_size"] = args.chunk_size
    if args.bandwidth_mbps is not None:
        options["bandwidth_bps"] = args.bandwidth_mbps * 1e6
    return UploadConfig(**options)


def _backend(args: argparse.Namespace) -> HardwareBackend:
    """The hardware backend the options name, built but not opened; ``DeviceError`` if bad."""
    name = args.backend
    backend_class(name)  # an unknown name is reported first, with the names there are
    options: dict[str, Any] = {}
    if name == "sim":
        if args.port is not None or args.baud is not None:
            raise ConfigError("--port and --baud are for hardware backends (--backend serial)")
    else:
        if args.port is None:
            raise ConfigError(f"--backend {name} needs --port URL (/dev/ttyUSB0, socket://...)")
        options["port"] = args.port
        if args.baud is not None:
            if not 50 <= args.baud <= 10_000_000:
                raise ConfigError(f"--baud must be from 50 to 10000000, got {args.baud}")
            options["baudrate"] = args.baud
    check_real_time(name, args.speed)
    return open_backend(name, **options)


def _hardware_error(exc: BaseException) -> HardwareError | None:
    """The ``HardwareError`` in ``exc`` (raised through task groups, it comes wrapped)."""
    if isinstance(exc, HardwareError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _hardware_error(inner)) is not None:
                return found
    return None


def _device_of(data_dir: Path | None) -> str:
    """The device whose data directory ``data_dir`` is (a restarted camera), else ``cam-001``."""
    if data_dir is not None and (data_dir / IDENTITY_FILE).exists():
        return read_identity(data_dir).device
    return "cam-001"


def _default_dir(device_id: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bwc-sim" / device_id


async def _main(
    args: argparse.Namespace,
    console: Console,
    *,
    scenario: Scenario,
    data_dir: Path,
    store: Path,
    broker: BrokerSettings | None,
    upload: UploadConfig,
    backend: HardwareBackend,
) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with _infrastructure(console, broker, store) as (settings, receiver):
        options = LiveOptions(
            data_dir=data_dir, broker=settings, speed=args.speed, upload=upload, backend=backend
        )
        live = LiveCamera(scenario, options, utc_now=dt.datetime.now(dt.UTC))
        if receiver is not None:
            receiver.core.present_key(scenario.device.id, live.run.identity.key.public_bytes())
        console.print(
            f"bwc-sim run: {scenario.device.id} on {settings.url}, data {data_dir}"
            + ("" if receiver is None else f", receiver store {store}"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        with _progress(console, args.json) as progress:
            watch = loop.create_task(_show(progress, live, scenario))
            try:
                await live.play(stop, until_uploaded=args.scenario is not None)
            finally:
                watch.cancel()
    segments = (
        list(_segments_in(store / "devices" / scenario.device.id))
        if receiver is not None
        else [*live.run.camera.store.closed_segments(), *_receipted(data_dir)]
    )
    report = build_report(live.run, segments)
    progress_now = live.uploads.progress()
    report["uploads"] = {
        "verified": progress_now.verified_segments,
        "rejected": progress_now.rejected_segments,
        "pending": progress_now.queued_segments,
        "bytes": progress_now.verified_bytes,
    }
    shipped = live.audit_ship.progress()
    report["audit_log"] = {
        "shipped_bytes": shipped.acked_bytes,
        "pending_bytes": shipped.pending_bytes,
        "problem": None if shipped.problem is None else shipped.problem.message,
    }
    return report


@contextlib.asynccontextmanager
async def _infrastructure(
    console: Console, broker: BrokerSettings | None, store: Path
) -> AsyncIterator[tuple[BrokerSettings, ReceiverService | None]]:
    """The external broker as given, or a private broker with an embedded receiver."""
    if broker is not None:
        yield broker, None
        return
    async with PrivateBroker() as private:
        if private.kind != "mosquitto":
            console.print(
                "bwc-sim run: mosquitto is not installed; using the in-process amqtt broker "
                "(MQTT 3.1.1, slower). Install mosquitto for real-world performance.",
                markup=False,
                soft_wrap=True,
            )
        settings = private.settings()  # with its login when it is amqtt
        receiver_store = ReceiverStore(store)
        trust = TrustPolicy(receiver_store.trust, TrustMode.PINNED)
        service = ReceiverService(EvidenceReceiver(receiver_store, trust), settings)
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(service.run())
            await service.connected.wait()
            try:
                yield settings, service
            finally:
                task.cancel()
        service.core.close()


def _segments_in(root: Path) -> Iterator[ClosedSegment]:
    """The closed segments under a device's directory (a receiver store's copy)."""
    for path in sorted(root.glob("recordings/*/*.bwcseg")):
        target = manifest_path(path)
        if target.exists():
            signed = read_signed_manifest(target)
            yield ClosedSegment(path, target, signed, signed.decode())


def _receipted(data_dir: Path) -> Iterator[ClosedSegment]:
    """Segments the device deleted after a verified upload, described by their receipts."""
    for path in sorted((data_dir / "uploads" / "verified").glob("*.json")):
        receipt = msgspec.json.decode(path.read_bytes(), type=Receipt)
        segment = data_dir / "recordings" / receipt.recording / segment_name(receipt.index)
        signed = receipt.signed_manifest
        yield ClosedSegment(segment, manifest_path(segment), signed, signed.decode())


@contextlib.contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Progress]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    ) as progress:
        yield progress


async def _show(progress: Progress, live: LiveCamera, scenario: Scenario) -> None:
    clock = progress.add_task("scenario", total=scenario.duration_s)
    upload = progress.add_task("upload", total=1)
    while True:
        now = live.daemon.now()
        progress.update(
            clock, completed=min(now, scenario.duration_s), description=format_time(now)
        )
        state = live.uploads.progress()
        total = max(1, state.verified_bytes + state.queued_bytes)
        progress.update(upload, completed=state.verified_bytes, total=total)
        await asyncio.sleep(0.25)


def _print_human(console: Console, report: dict[str, Any]) -> None:
    uploads = report["uploads"]
    for item in report["recordings"]:
        console.print(
            f"  {item['id']}: {item['start_utc']} .. {item['stop_utc']}, "
            f"{item['start_trigger']} -> {item['stop_trigger']}, {len(item['segments'])} segments",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"uploads: {uploads['verified']} verified ({uploads['bytes']:,} bytes), "
        f"{uploads['rejected']} rejected, {uploads['pending']} pending; "
        f"{len(report['compliance'])} compliance finding(s); audit log: "
        f"{report['audit_log']['shipped_bytes']:,} bytes at the receiver",
        markup=False,
        soft_wrap=True,
    )
