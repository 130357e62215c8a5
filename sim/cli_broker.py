"""The broker options shared by ``bwc-sim run`` and ``bwc-sim receiver``.

``--username``, ``--password`` (better: the ``BWC_MQTT_PASSWORD`` variable, which stays out of the
process list), ``--ca-file`` for ``mqtts://``, and ``--mqtt`` for the protocol version; the URL
option itself differs (required for the receiver, optional for ``run``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Final

from device.mqtt.settings import BrokerSettings, parse_broker_url

PASSWORD_ENV: Final = "BWC_MQTT_PASSWORD"  # noqa: S105 - the name of a variable, not a password


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--username``, ``--password``, ``--ca-file`` and ``--mqtt`` to ``parser``."""
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password", help=f"broker password (better: the {PASSWORD_ENV} variable)")
    parser.add_argument("--ca-file", type=Path, help="CA certificates for mqtts:// (PEM)")
    parser.add_argument("--mqtt", choices=["5", "3.1.1"], default="5", help="MQTT version")


def broker_settings(url: str, args: argparse.Namespace) -> BrokerSettings:
    """The settings for ``url`` with the shared options; ``ConfigError`` if they do not fit."""
    return parse_broker_url(
        url,
        username=args.username,
        password=args.password or os.environ.get(PASSWORD_ENV),
        ca_file=args.ca_file,
        protocol=args.mqtt,
    )
