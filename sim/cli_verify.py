"""``bwc-sim verify DIR``: check a device's evidence store and name the first thing that is wrong.

DIR may also be an evidence receiver's store (``bwc-sim receiver --store``): then every device's
segments are checked against its keys in the store's ``trust/`` (docs/receiver.md).

Checks, in order: ``device.json`` (the device and its key), the hash-chained ``audit.log`` with its
signed checkpoints, then every recording and segment (manifest present, signature, names, size,
SHA-256, a strict read of every record, the METADATA record). By default the key in
``device.json`` is trusted, which proves integrity but not authenticity; ``--public-key`` or
``--trust`` check against a key obtained out of band.

Exit 0 if every check holds, 1 if one fails, 2 on bad usage or if DIR is not a device store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from device.errors import ConfigError, StorageError
from device.segmentverify import parse_public_key
from device.signing import TrustStore
from device.verify import ProgressFn, verify_store
from device.verifyreport import Trust, VerifyReport
from sim.receiver.verify import (
    STORE_KIND_RECEIVER,
    is_receiver_store,
    report_lines,
    verify_receiver_store,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(commands: Any) -> None:
    """Add the ``verify`` subcommand."""
    parser = commands.add_parser(
        "verify",
        help="check a device's evidence store: audit chain, segments, signatures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="the device's data directory")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--public-key", metavar="HEX", help="trust this raw Ed25519 public key (64 hex digits)"
    )
    trust.add_argument(
        "--trust", type=Path, metavar="DIR", help="trust the device's key enrolled in this store"
    )
    parser.add_argument(
        "--all", action="store_true", dest="all_faults", help="list every fault, not the first"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Verify and report; exit 0 if every check holds, 1 if not, 2 on bad input."""
    console = Console(stderr=True)
    try:
        public_key = None if args.public_key is None else parse_public_key(args.public_key)
        trust_store = None if args.trust is None else _trust_store(args.trust)
        if is_receiver_store(args.dir):
            report = verify_receiver_store(
                args.dir, public_key=public_key, trust_store=trust_store, all_faults=args.all_faults
            )
        else:
            with _progress_bar(console, enabled=not args.json) as on_progress:
                report = verify_store(
                    args.dir,
                    public_key=public_key,
                    trust_store=trust_store,
                    all_faults=args.all_faults,
                    on_progress=on_progress,
                )
    except (ConfigError, StorageError) as exc:
        print(f"bwc-sim verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print_human(console, report, all_faults=args.all_faults)
    return EXIT_OK if report.ok else EXIT_FAILED


def _trust_store(directory: Path) -> TrustStore:
    # TrustStore treats a missing directory as "no key enrolled"; here it is a mistyped option.
    if not directory.is_dir():
        raise ConfigError(f"--trust {directory}: not a directory")
    return TrustStore(directory)


@contextmanager
def _progress_bar(console: Console, *, enabled: bool) -> Iterator[ProgressFn]:
    """A transient bar on stderr while segments are read; nothing when off or not a terminal."""
    with Progress(
        TextColumn("verify"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    ) as progress:
        task = progress.add_task("verify", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _print_human(console: Console, report: VerifyReport, *, all_faults: bool) -> None:
    lines = report_lines(report) if report.store == STORE_KIND_RECEIVER else report.lines()
    for line in lines:
        # Paths may hold brackets: print them as text, never as rich markup.
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    hints = []
    if report.stopped_early and not all_faults:
        hints.append("--all lists every fault")
    if report.trust is Trust.SELF:
        hints.append("--public-key or --trust check authenticity")
    if hints:
        console.print(f"({'; '.join(hints)})", markup=False, highlight=False, soft_wrap=True)
