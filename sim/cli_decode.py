"""``bwc-sim decode``: check a payload against the protocol, as a backend developer would.

Reads one MQTT payload (a file, or ``-`` for stdin) and the topic it was published on, and prints
the decoded message, or the decoder's error naming the field. Exit 0 if valid, 2 if not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from protocol.auditship import decode_audit_ack, decode_audit_range
from protocol.errors import DecodeError
from protocol.messages import decode_for_channel
from protocol.topics import DeviceChannel, DeviceTopic, Topics
from protocol.upload import decode_chunk, decode_upload_control


def register(commands: Any) -> None:
    """Add the ``decode`` subcommand."""
    parser = commands.add_parser(
        "decode",
        help="validate an MQTT payload against the bwc-sim protocol",
        description=__doc__,
    )
    parser.add_argument("--topic", required=True, help="the topic the payload was published on")
    parser.add_argument("payload", help="file holding the payload, or - for stdin")
    parser.add_argument("--prefix", default="bwc", help="topic namespace prefix (default: bwc)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Decode and report; exit 0 if valid, 2 if not."""
    try:
        raw = sys.stdin.buffer.read() if args.payload == "-" else Path(args.payload).read_bytes()
    except OSError as exc:
        print(f"bwc-sim decode: cannot read {args.payload}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        summary = describe(Topics(args.prefix), args.topic, raw)
    except DecodeError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def describe(topics: Topics, topic: str, raw: bytes) -> dict[str, Any]:
    """The decoded payload as a JSON-ready dict; raises ``DecodeError`` if anything is invalid."""
    parsed = topics.parse(topic)
    channel = parsed.channel
    if isinstance(parsed, DeviceTopic) and channel.value == "upload/chunk":
        chunk = decode_chunk(raw)
        return {
            "type": "chunk",
            "upload_id": chunk.upload_id,
            "offset": chunk.offset,
            "length": len(chunk.data),
        }
    if isinstance(parsed, DeviceTopic) and channel.value.startswith("upload/"):
        return dict(msgspec.to_builtins(decode_upload_control(raw)))
    if channel is DeviceChannel.AUDIT:
        audit = decode_audit_range(raw)
        lines = audit.data.count(b"\n")
        return {
            "type": "audit_range",
            "offset": audit.offset,
            "length": len(audit.data),
            "lines": lines,
        }
    if channel is DeviceChannel.AUDIT_ACK:
        return dict(msgspec.to_builtins(decode_audit_ack(raw)))
    return dict(msgspec.to_builtins(decode_for_channel(channel, raw)))
