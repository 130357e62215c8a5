"""Closed vocabularies shared by messages, manifests and the audit log.

Each is a ``Literal`` so msgspec rejects anything else when decoding and mypy checks our own code.
Adding a value is a protocol change: update ``docs/protocol.md`` with it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

DeviceState = Literal[
    "off",  # powered off: no buffer, no recording
    "buffering",  # pre-event buffering, ready to record
    "recording",
    "post_event",  # recording the post-event buffer after a stop
    "sleeping",  # sleep mode: no buffer, triggers ignored
    "docked",  # on the dock: charging and uploading, no buffer
    "fault",  # a fault stops recording (storage full, storage error)
]

Mode = Literal["stealth", "mute", "sleep"]
"""Modes switched on and off. Stealth: no LEDs, tones or haptics. Mute: no audio."""

TriggerKind = Literal[
    "button",
    "holster",
    "vehicle_lightbar",
    "vehicle_siren",
    "vehicle_door",
    "vehicle_speed",
    "taser_armed",
    "taser_trigger",
    "taser_arc",
    "gunshot",
    "foot_pursuit",
    "officer_down",
    "geofence",
    "remote",
    "peer",
    "scenario",
    "policy",  # the device's own rules: maximum duration, cancel window, post-event end
    "power",  # power loss or shutdown
    "storage",  # storage full or failed
    "battery",
    "recovery",  # a segment closed after a crash
]

ClockSource = Literal["unset", "sync", "gps", "manual"]
"""Where the device clock was last set from; ``unset`` means UTC timestamps are not trustworthy."""

FaultSeverity = Literal["info", "warning", "error", "critical"]

Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
"""Free text chosen by a person or a policy: a reason, a category, a marker note."""

ShortText = Annotated[str, msgspec.Meta(max_length=1000)]
"""A human-readable explanation."""
