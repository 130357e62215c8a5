"""The ``bwc-sim`` command line: one tool, conventional subcommands.

Exit codes: 0 success; 1 the check or run failed; 2 bad usage or bad input (the message names the
line or field). With ``--json`` a command prints exactly one JSON object on stdout; human output
and progress go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from sim import (
    cli_bench,
    cli_decode,
    cli_demo,
    cli_fleet,
    cli_receiver,
    cli_run,
    cli_scenario,
    cli_verify,
)
from sim.tuning import tune_allocator

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return version("bwc-sim")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="bwc-sim",
        description="Emulate a police body-worn camera's firmware, its evidence backend and "
        "its bench hardware.",
    )
    parser.add_argument("--version", action="version", version=f"bwc-sim {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cli_demo.register(commands)
    cli_scenario.register(commands)
    cli_decode.register(commands)
    cli_verify.register(commands)
    cli_receiver.register(commands)
    cli_run.register(commands)
    cli_bench.register(commands)
    cli_fleet.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
