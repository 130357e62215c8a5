"""Logging for the long-running commands: quiet by default, ``-v`` for progress, ``-vv`` for all.

Logs go to stderr as one line per record, so ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """``-v`` / ``-vv``."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv)")


def configure_logging(verbose: int) -> None:
    """Warnings only; with ``-v`` progress (info); with ``-vv`` everything (debug)."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
