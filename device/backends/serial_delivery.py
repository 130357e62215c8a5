"""How the serial backend hands its events out: in ``t_ms`` order after a loss, and never blocking.

The serial link delivers each reliable message at most once but not necessarily in order: an
input whose frame was corrupted is resent ``ack_timeout_s`` (0.25 s) later, after the inputs the
MCU sent meanwhile, and receivers order inputs by ``t_ms`` (docs/protocol.md, "Reliable
delivery"). ``InputHold`` does that at no cost on a clean line. Sans-IO: every call that needs the
time takes it, on the backend's clock.

- ``OPEN``: inputs are delivered as they arrive.
- ``HOLDING``: the link's decoder dropped bytes (a CRC or COBS error, garbage, a short or oversize
  run), so a frame may have been lost and be resent. Inputs that arrive are kept, and released
  together, sorted by hardware time (``input_time``; the link already dropped duplicates), once
  ``hold_s`` passed with no further loss: long enough for a retransmission. On a line so noisy
  that it is never quiet that long, an input held ``max_hold_s`` (the sender's retry span: what
  was sent before it has arrived by then) is released then, with every held input stamped
  before it. A link that goes down, or a backend that closes, releases them all at once.
- ``RELEASED``: the released inputs wait in the queue; once the consumer has taken them, ``OPEN``.

While ``HOLDING`` or ``RELEASED``, ``horizon(now)`` is how far the camera's world may be played:
``margin_s`` (a frame's transit) before the oldest loss whose frame may still be resent and the
first held input, and no further until the consumer has taken what was released, since a held
or resent input may belong just after it. A released input carries the time it would have
arrived had no frame been lost (its hardware time plus the smallest transit among the inputs
held with it), so the camera times it by the hardware's spacing, not by when it was released.

``EventQueue`` is the bounded queue behind ``SerialBackend.events()``.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from device.backends.events import (
    BackendEvent,
    BatteryInput,
    GpsInput,
    ImuInput,
    LinkDownEvent,
    LinkUpEvent,
)
from device.errors import ConfigError
from protocol.serial import LinkConfig, LinkCounters

HOLD_COUNTERS: Final = ("holds", "held_inputs", "reordered_inputs")
"""``holds`` started, inputs ``held`` in them, and inputs ``reordered``: released before one
that arrived ahead of them."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A backend event on its way to the consumer."""

    event: BackendEvent
    arrived: float | None = None
    """None: delivered as it arrived. For a held input: when it would have arrived had no frame
    been lost, on the backend's clock."""


def input_time(event: BackendEvent) -> float:
    """The hardware time an input is ordered and timed by: ``hw_time_s``, or for an IMU batch
    the time of its last sample (as ``HardwareBridge`` places it); 0 for a link event."""
    if isinstance(event, LinkUpEvent | LinkDownEvent):
        return 0.0
    if isinstance(event, ImuInput):
        return event.hw_time_s + max(0, len(event.accel_g) - 1) * event.period_s
    return event.hw_time_s


def loss_marks(counters: LinkCounters) -> int:
    """Grows whenever the link's decoder dropped bytes: a frame may have been lost."""
    return counters.bytes_dropped + counters.resyncs + counters.crc_errors + counters.cobs_errors


# -- the hold -----------------------------------------------------------------------------------

_Held = tuple[BackendEvent, float]
"""A held input and when it arrived."""


@dataclass(frozen=True, slots=True)
class HoldConfig:
    """How long inputs are held after a loss; validated when made.

    Until ``hold_s`` passed with no further loss (default: two ack timeouts, room for one
    retransmission), but no input longer than ``max_hold_s`` (default: the sender's whole retry
    span). The camera's world is held ``margin_s`` (a frame's transit) before a loss.
    """

    hold_s: float = 0.5
    max_hold_s: float = 1.5
    margin_s: float = 0.02

    def __post_init__(self) -> None:
        for name in ("hold_s", "max_hold_s", "margin_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"serial backend: {name} must be a number, got {value!r}")
            low, ok = (">= 0", value >= 0) if name == "margin_s" else ("> 0", value > 0)
            if not (math.isfinite(value) and ok):
                raise ConfigError(f"serial backend: {name} must be finite and {low}, got {value}")
        if self.max_hold_s < self.hold_s:
            raise ConfigError(
                f"serial backend: max_hold_s ({self.max_hold_s:g}) must be at least hold_s "
                f"({self.hold_s:g})"
            )

    @classmethod
    def for_link(cls, config: LinkConfig) -> HoldConfig:
        """Hold for two ack timeouts, at most the sender's retry span (at least that)."""
        hold_s = 2 * config.ack_timeout_s
        return cls(hold_s, max(hold_s, config.ack_timeout_s * (config.max_retries + 1)))


class HoldState(enum.Enum):
    """Where the hold is (see the module docstring)."""

    OPEN = "open"
    HOLDING = "holding"
    RELEASED = "released"


class HoldInput(enum.Enum):
    """What moves the hold."""

    LOSS = "loss"
    """The decoder dropped bytes."""
    RELEASE = "release"
    """The hold's deadline passed, or the link went down, or the backend closed."""
    TAKEN = "taken"
    """The consumer took everything queued."""


_OPEN, _HOLDING, _RELEASED = HoldState.OPEN, HoldState.HOLDING, HoldState.RELEASED
TRANSITIONS: Final[Mapping[tuple[HoldState, HoldInput], HoldState]] = {
    (_OPEN, HoldInput.LOSS): _HOLDING,
    (_HOLDING, HoldInput.LOSS): _HOLDING,  # extended
    (_RELEASED, HoldInput.LOSS): _HOLDING,  # a new hold; the world stays held from the first
    (_OPEN, HoldInput.RELEASE): _OPEN,
    (_HOLDING, HoldInput.RELEASE): _RELEASED,
    (_RELEASED, HoldInput.RELEASE): _RELEASED,
    (_OPEN, HoldInput.TAKEN): _OPEN,
    (_HOLDING, HoldInput.TAKEN): _HOLDING,
    (_RELEASED, HoldInput.TAKEN): _OPEN,
}
"""Every (state, input) pair: each is legal, and this is where it leads."""


class InputHold:
    """Holds inputs after a loss and releases them in hardware-time order (module docstring)."""

    def __init__(self, config: HoldConfig) -> None:
        self.config = config
        self.state = HoldState.OPEN
        self.counters: dict[str, int] = dict.fromkeys(HOLD_COUNTERS, 0)
        self._held: list[_Held] = []
        """(input, arrived), in arrival order."""
        self._losses: deque[float] = deque()
        """Losses of this hold less than ``max_hold_s`` ago: their frames may still be resent."""
        self._quiet_at: float | None = None
        self._released_horizon: float | None = None
        """The horizon when inputs not yet taken by the consumer were released."""

    def lost(self, now: float) -> None:
        """The decoder dropped bytes at ``now``: hold, or hold longer."""
        if self.state is not HoldState.HOLDING:
            self.counters["holds"] += 1
        self._losses.append(now)
        self._quiet_at = now + self.config.hold_s
        self._move(HoldInput.LOSS)

    def put(self, event: BackendEvent, now: float) -> Delivery | None:
        """An input arrived at ``now``: the delivery to queue now, or None when it is held."""
        if self.state is not HoldState.HOLDING:
            return Delivery(event)
        self._held.append((event, now))
        self.counters["held_inputs"] += 1
        return None

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` has something to release (None unless holding)."""
        if self._quiet_at is None or not self._held:
            return self._quiet_at
        return min(self._quiet_at, self._held[0][1] + self.config.max_hold_s)

    def handle_timeout(self, now: float) -> list[Delivery]:
        """What to deliver at ``now``, in order: everything once ``hold_s`` passed without a
        loss; else each input held ``max_hold_s`` (whatever was sent before it has arrived by
        then), with every held input stamped before it; else nothing."""
        if self._quiet_at is None:
            return []
        if now >= self._quiet_at:
            return self.release(now)
        while len(self._losses) > 1 and self._losses[0] < self._relevant_since(now):
            self._losses.popleft()
        # The same sum as next_deadline's, so that a deadline reached finds something due.
        due = [item for item in self._held if item[1] + self.config.max_hold_s <= now]
        if not due:
            return []
        latest = max(input_time(event) for event, _ in due)
        released, kept = due, list[_Held]()
        for item in self._held[len(due) :]:
            (released if input_time(item[0]) <= latest else kept).append(item)
        return self._hand_out(released, kept, now)

    def release(self, now: float) -> list[Delivery]:
        """End any hold at ``now`` (the link went down, the backend closes): its inputs, in
        order."""
        if self.state is not HoldState.HOLDING:
            return []
        released = self._hand_out(self._held, [], now)
        self._losses.clear()
        self._quiet_at = None
        self._move(HoldInput.RELEASE)
        if self._released_horizon is None:
            self.taken()  # nothing for the consumer to take
        return released

    def taken(self) -> None:
        """The consumer has taken everything queued: released inputs no longer hold the world."""
        self._released_horizon = None
        self._move(HoldInput.TAKEN)

    def horizon(self, now: float) -> float | None:
        """How far the camera's world may be played at ``now`` (backend clock); None: as far as
        it likes.

        While holding: before the oldest loss whose frame may still come, or be one of the held
        inputs (``_relevant_since``); and never past where it was when inputs the consumer has
        not yet taken were released.
        """
        horizons = [] if self._released_horizon is None else [self._released_horizon]
        if self.state is HoldState.HOLDING:
            since = self._relevant_since(now)
            loss = next((t for t in self._losses if t >= since), self._losses[-1])
            horizons.append(loss - self.config.margin_s)
        return min(horizons, default=None)

    def _relevant_since(self, now: float) -> float:
        """Losses since then may be of a frame still to be resent, or of a held input: the
        sender resends a frame for ``max_hold_s`` at most after its loss."""
        first_arrival = self._held[0][1] if self._held else now
        return first_arrival - self.config.max_hold_s

    def _transit(self) -> float:
        """The fastest transit of the held inputs: when each would have arrived had none been
        resent is its hardware time plus this (the hardware's spacing)."""
        return min(arrived - input_time(event) for event, arrived in self._held)

    def _move(self, happened: HoldInput) -> None:
        self.state = TRANSITIONS[self.state, happened]

    def _hand_out(
        self,
        released: list[_Held],
        kept: list[_Held],
        now: float,
    ) -> list[Delivery]:
        """``released`` in hardware-time order; ``kept`` stay held."""
        if not released:
            return []
        self._released_horizon = self.horizon(now)
        latest = -math.inf
        for event, _ in released:
            time = input_time(event)
            if time < latest:
                self.counters["reordered_inputs"] += 1
            latest = max(latest, time)
        transit = self._transit()
        self._held = kept
        ordered = sorted((event for event, _ in released), key=input_time)  # stable
        return [Delivery(event, input_time(event) + transit) for event in ordered]


# -- the event queue ----------------------------------------------------------------------------


def _superseded(event: BackendEvent) -> int:
    """Drop order when the queue is full: IMU batches first, then GPS and battery, then any."""
    if isinstance(event, ImuInput):
        return 0
    if isinstance(event, GpsInput | BatteryInput):
        return 1
    return 2


class EventQueue:
    """A bounded FIFO of deliveries that never blocks the producer.

    When full, the oldest IMU batch is dropped to make room (the next batch supersedes it), then
    the oldest GPS fix or battery reading, and only then the oldest event of any kind.
    ``on_drop`` is called once per dropped event (for the ``events_dropped`` counter).
    """

    def __init__(self, capacity: int, on_drop: Callable[[BackendEvent], None]) -> None:
        self._capacity = capacity
        self._on_drop = on_drop
        self._items: deque[Delivery] = deque()
        self._ready = asyncio.Event()
        self._finished = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, delivery: Delivery) -> None:
        """Append ``delivery``, dropping an older one if the queue is full."""
        if len(self._items) >= self._capacity:
            self._drop_one()
        self._items.append(delivery)
        self._ready.set()

    def finish(self) -> None:
        """No more events: ``get`` returns None once the queue is empty."""
        self._finished = True
        self._ready.set()

    async def get(self) -> Delivery | None:
        """The oldest delivery, waiting for one; None once finished and empty."""
        while not self._items:
            if self._finished:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def _drop_one(self) -> None:
        rank = min(_superseded(item.event) for item in self._items)
        for index, item in enumerate(self._items):
            if _superseded(item.event) == rank:
                del self._items[index]
                self._on_drop(item.event)
                return
