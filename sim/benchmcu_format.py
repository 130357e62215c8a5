"""The bench consoles' output lines: messages, link events and frames, for people and machines.

Every line a console prints is one of these; each is readable and splits on spaces:

- a message in the command language's own words: ``led 0 255 0 0 solid``, ``tone 880 200ms x2``,
  ``haptic 1 300ms``, ``display "REC"``, ``button event down``, ``holster drawn``, ``speed 80``,
  ``taser arc``, ``battery 80 4020mV charging``;
- a link event: ``connected host boot=0x1a2b3c4d firmware="bwc-sim bench"``,
  ``link lost: <reason>``, ``host rebooted: boot=0x... -> 0x...``,
  ``failed: <message> seq=N: <reason>``, ``rejected: type 0x.. seq=N: <reason>``,
  ``version mismatch: <what to do>``;
- a frame (``FrameLog``): ``  12.345 rx #42 ButtonEdge t_ms=1234 button=event pressed=True
  [ack requested]``, and ``rx dropped N bytes`` for garbage between frames.

``FrameLog`` with ``json_lines`` prints each as one JSON object with ``kind`` and ``text`` plus
the same facts as fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
from collections.abc import AsyncIterator
from typing import Any, assert_never

from protocol.errors import DecodeError
from protocol.serial import (
    Battery,
    ButtonEdge,
    Connected,
    DeliveryFailed,
    DisplayText,
    FrameDecoder,
    Haptic,
    Hello,
    Holster,
    ImuBatch,
    Led,
    LinkEvent,
    LinkLost,
    MessageReceived,
    MessageRejected,
    PeerRebooted,
    SerialMessage,
    Taser,
    Tone,
    VehicleInput,
    VehicleInputKind,
    VersionMismatch,
    decode_message,
)


def say(line: str) -> None:
    """Print one line to stdout at once (a peer process may be waiting for it)."""
    with contextlib.suppress(BrokenPipeError):
        print(line, flush=True)


def describe(message: SerialMessage) -> str:  # noqa: PLR0911 - one per type
    """A message in the console's own words: ``led 0 255 0 0 solid``, ``holster drawn``..."""
    match message:
        case ButtonEdge(button=button, pressed=pressed):
            return f"button {button.name.lower()} {'down' if pressed else 'up'}"
        case Holster(drawn=drawn):
            return f"holster {'drawn' if drawn else 'holstered'}"
        case VehicleInput(input=VehicleInputKind.SPEED, value=value):
            return f"speed {value}"
        case VehicleInput(input=kind, value=value):
            words = ("closed", "open") if kind is VehicleInputKind.DOOR else ("off", "on")
            return f"{kind.name.lower()} {words[value]}"
        case Taser(event=event):
            return f"taser {event.name.lower()}"
        case Battery(percent=percent, millivolts=mv, charging=charging):
            return f"battery {percent} {mv}mV{' charging' if charging else ''}"
        case Led(led=led, r=r, g=g, b=b, pattern=pattern):
            return f"led {led} {r} {g} {b} {pattern.name.lower()}"
        case Haptic(pattern=pattern, duration_ms=ms):
            return f"haptic {pattern} {ms}ms"
        case Tone(frequency_hz=hz, duration_ms=ms, repeat=repeat):
            return f"tone {hz} {ms}ms x{repeat}"
        case DisplayText(text=text):
            return f"display {json.dumps(text, ensure_ascii=False)}"
    return f"{type(message).__name__.lower()} {_pairs(message_fields(message))}"


def describe_event(event: LinkEvent, peer: str) -> str:  # noqa: PLR0911 - one per event
    """One line for a link event from the side whose peer is ``peer`` ("host" or "mcu").

    A message received is ``describe``d; on the host side it is prefixed ``input``.
    """
    match event:
        case Connected(peer=hello):
            firmware = json.dumps(hello.firmware, ensure_ascii=False)
            return f"connected {peer} boot=0x{hello.boot_id:08x} firmware={firmware}"
        case MessageReceived(message=message):
            return describe(message) if peer == "host" else f"input {describe(message)}"
        case LinkLost(reason=reason):
            return f"link lost: {reason}"
        case PeerRebooted(old_boot_id=old, new_boot_id=new):
            return f"{peer} rebooted: boot=0x{old:08x} -> 0x{new:08x}"
        case DeliveryFailed(message=message, seq=seq, reason=reason):
            return f"failed: {describe(message)} seq={seq}: {reason}"
        case MessageRejected(type_code=code, seq=seq, reason=reason):
            return f"rejected: type 0x{code:02x} seq={seq}: {reason}"
        case VersionMismatch():
            return f"version mismatch: {event.description}"
    assert_never(event)


def message_fields(message: SerialMessage) -> dict[str, Any]:
    """A message's fields as JSON-ready values (enums by name, boot ids in hex)."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if isinstance(message, Hello) and field.name in ("boot_id", "peer_boot_id"):
            value = f"0x{value:08x}"
        elif isinstance(value, enum.Enum):
            # A combination of flags is named "A|B" (Python 3.11+); no flag at all has no name.
            value = value.name.lower() if value.name else int(value.value)
        elif isinstance(message, ImuBatch) and field.name == "samples":
            value = len(value)
        fields[field.name] = value
    return fields


def _pairs(fields: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={json.dumps(value, ensure_ascii=False) if isinstance(value, str) else value}"
        for key, value in fields.items()
    )


class FrameLog:
    """Prints every frame passing a port, decoded, and the console's other lines.

    ``tap`` is a ``LinkShell`` tap: it runs its own decoder per direction, so it shows each
    frame as it went over the wire (retransmissions and duplicates included), apart from what
    the link made of it.
    """

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines
        self._start: float | None = None
        self._decoders = {"rx": FrameDecoder(), "tx": FrameDecoder()}

    def tap(self, direction: str, data: bytes, now: float) -> None:
        """Decode ``data`` read (``rx``) or written (``tx``) at ``now`` and print its frames."""
        self._start = now if self._start is None else self._start
        decoder = self._decoders[direction]
        dropped = decoder.counters.bytes_dropped
        elapsed = now - self._start
        for frame in decoder.feed(data):
            try:
                message: SerialMessage | None = decode_message(frame.type_code, frame.payload)
            except DecodeError:
                message = None
            name = type(message).__name__ if message else f"type 0x{frame.type_code:02x}"
            fields = message_fields(message) if message else {"payload": frame.payload.hex()}
            flag = " [ack requested]" if frame.ack_requested else ""
            self.emit(
                "frame",
                f"{elapsed:9.3f} {direction} #{frame.seq} {name} {_pairs(fields)}{flag}",
                t=round(elapsed, 6),
                dir=direction,
                seq=frame.seq,
                type=name,
                reliable=frame.ack_requested,
                fields=fields,
            )
        if decoder.counters.bytes_dropped != dropped:
            count = decoder.counters.bytes_dropped - dropped
            self.emit("garbage", f"{direction} dropped {count} bytes", dir=direction, count=count)

    def emit(self, kind: str, text: str, **fields: Any) -> None:
        """One line: ``text``, or with ``json_lines`` an object of kind, text and fields."""
        say(json.dumps({"kind": kind, "text": text, **fields}) if self.json_lines else text)

    async def print_events(self, events: AsyncIterator[LinkEvent], peer: str) -> None:
        """Print each link event as it comes (``describe_event``)."""
        async for event in events:
            self.emit(type(event).__name__, describe_event(event, peer))
