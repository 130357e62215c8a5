"""Field types and the base class shared by every JSON message."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocol.ids import SafeId, UtcTime
from protocol.vocabulary import Label, TriggerKind

NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0.0)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
HardwareTimeMs = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]


class Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
):
    """Base of every JSON message: a schema version, a ``type`` tag, and when it was made."""

    v: Literal[1] = 1
    ts: UtcTime


class Trigger(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Provenance of an activation or deactivation: what fired, through which input, and when.

    ``source`` names the input path (``button:event``, ``mcu``, ``mqtt:dispatch``, ``peer:cam-2``).
    ``hw_time_ms`` is the hardware's own timestamp when the trigger came from hardware.
    """

    kind: TriggerKind
    source: Label
    hw_time_ms: HardwareTimeMs | None = None


class DeviceMessage(Message, frozen=True, kw_only=True):
    """A message a device publishes about itself."""

    device: SafeId
