"""``bwc-sim demo``: upload a signed segment through the resumable-upload protocol over a bad link.

Shows the protocol end to end in virtual time: the device offers a segment with a signed
manifest, the receiver checks the signature, chunks travel over a link that drops, duplicates,
reorders and corrupts them, and the upload ends verified, byte for byte, or says why not.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from device.errors import ConfigError
from protocol.errors import LocalProtocolError
from protocol.upload import SenderConfig, UploadResult
from sim.linksim import LinkProfile
from sim.upload_demo import DEMO_CHUNK_SIZE, DemoResult, run_upload_demo


def register(commands: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo", help="upload a signed segment over a lossy simulated link", description=__doc__
    )
    parser.add_argument("--size", type=int, default=8 * 1024 * 1024, help="segment bytes")
    parser.add_argument(
        "--chunk-size", type=int, default=DEMO_CHUNK_SIZE, help="data bytes per chunk"
    )
    parser.add_argument("--drop", type=float, default=0.05, help="probability a message is lost")
    parser.add_argument("--duplicate", type=float, default=0.02, help="probability of a copy")
    parser.add_argument("--corrupt", type=float, default=0.01, help="probability of a bit flip")
    parser.add_argument("--seed", type=int, default=1, help="seed for data and link behaviour")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 if the segment was verified byte for byte, 1 if not, 2 on bad input."""
    if args.size < 0:
        print(f"bwc-sim demo: --size must be >= 0, got {args.size}", file=sys.stderr)
        return 2
    try:
        profile = LinkProfile(drop=args.drop, duplicate=args.duplicate, corrupt=args.corrupt)
        config = SenderConfig(
            chunk_size=args.chunk_size, window=16, ack_timeout_s=0.5, max_retries=10
        )
    except (ConfigError, LocalProtocolError) as exc:
        print(f"bwc-sim demo: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    with Progress(
        TextColumn("upload"), BarColumn(), DownloadColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task("upload", total=args.size)
        result = run_upload_demo(
            size=args.size,
            profile=profile,
            seed=args.seed,
            sender_config=config,
            on_progress=lambda committed, _total: progress.update(task, completed=committed),
        )
    summary = _summary(result)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_human(console, summary)
    ok = result.result is UploadResult.VERIFIED and result.stored_identical
    return 0 if ok else 1


def _summary(result: DemoResult) -> dict[str, Any]:
    link = result.link
    return {
        "result": result.result.value,
        "code": result.code,
        "bytes": result.size,
        "stored_identical": result.stored_identical,
        "virtual_seconds": round(result.virtual_s, 3),
        "chunks_sent": result.chunks_sent,
        "corrupt_chunks_refused": result.corrupt_chunks_refused,
        "link": {
            "sent": link.sent,
            "dropped": link.dropped,
            "duplicated": link.duplicated,
            "corrupted": link.corrupted,
        },
    }


def _print_human(console: Console, summary: dict[str, Any]) -> None:
    link = summary["link"]
    console.print(
        f"upload {summary['result']}: {summary['bytes']:,} bytes, stored byte-identical: "
        f"{summary['stored_identical']}, in {summary['virtual_seconds']} s of virtual time",
        soft_wrap=True,
    )
    console.print(
        f"link: {link['sent']} messages, {link['dropped']} dropped, {link['duplicated']} "
        f"duplicated, {link['corrupted']} corrupted; {summary['corrupt_chunks_refused']} corrupt "
        f"chunks refused by their CRC; {summary['chunks_sent']} chunks sent in all",
        soft_wrap=True,
    )
