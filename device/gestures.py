"""The Event button's gesture recognizer: raw edges in, gestures and ignored-input records out.

Pure and sans-clock: ``edge(pressed, now)`` (or ``press``/``release``) takes each raw edge,
``next_deadline()`` says when ``handle_timeout(now)`` must run, and every call first settles
whatever fell due up to ``now``. Times in results are decision times taken from the inputs and
deadlines, never from how late a caller was, so a trace is the same in real and virtual time.

Edges may also arrive late: ``edge(pressed=..., now=..., at=t)`` is an edge that happened at ``t``
(the hardware's timestamp) but reached the caller only at ``now`` (a host stall, a queue). It is
taken at ``t``, exactly as if it had arrived then, unless the recognizer has already decided
something after ``t`` (a decision cannot be undone): then just after that decision. So a deadline
must be judged (``handle_timeout``) only once the input up to it is known; deadlines that a late
edge leaves behind ``now`` are reported due at ``now`` and judged at the next call, never inside
``edge``, so the late edges queued behind it are taken first.

Two layers:

1. Debouncing, by a ``DigitalInput``: an edge is accepted once the line has stayed at its level
   for ``debounce_s``, timed from the first edge of the burst. Bounce edges inside the burst come
   out as one ``InputIgnored(CONTACT_BOUNCE, edges=n)``; a pulse that reverts within
   ``debounce_s`` comes out as ``GLITCH`` and reaches no gesture. Waiting for the line to settle
   costs ``debounce_s`` of latency, and buys that a noise spike can never start or stop a
   recording; the pre-event buffer covers the latency.
2. The gesture machine, on clean edges timed at the physical edge: an Enum of states and a table
   of ``(state, input) -> (state, output)``. Gesture timers wait while the line is unsettled,
   so a release that began just before the hold threshold is a release, not a hold.

Gestures (one at most per press sequence, a sequence ending back in ``IDLE``):

- ``DOUBLE_PRESS``: a click (press of at most ``max_click_s``), then a second press within
  ``double_press_window_s`` of its release; emitted when the second press settles. Holding that
  second press does not also make a ``HOLD``: a stop needs a fresh press.
- ``HOLD``: a first press still down ``hold_s`` after it began; emitted then, not at release.
- ``SINGLE_PRESS``: a click with no second press when the window expires.

A press longer than ``max_click_s`` and shorter than ``hold_s`` is ``NOT_A_CLICK``. An edge that
repeats the settled level means the opposite edge was lost (line noise, a lost serial frame):
the sequence in progress is abandoned and reported, and a repeated press starts a new sequence
(the press itself is real, so a hold still works). Only caller misuse raises
``LocalProtocolError``: ``now`` going backwards, or a time that is not finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from device.errors import ConfigError
from device.inputs import (
    DigitalInput,
    IgnoreReason,
    InputChange,
    InputEvent,
    InputIgnored,
    check_now,
)
from device.validate import check_number
from protocol.errors import LocalProtocolError

BUTTON_NAME: Final = "event_button"
"""The ``name`` on the button's ``InputIgnored`` records."""


class GestureKind(Enum):
    """Gestures of the Event button."""

    DOUBLE_PRESS = "double_press"
    """Starts recording."""
    HOLD = "hold"
    """Held for ``hold_s``: stops recording."""
    SINGLE_PRESS = "single_press"
    """One click: a marker while recording."""


@dataclass(frozen=True, slots=True)
class Gesture:
    """A recognised gesture: ``at_s`` when it was recognised, ``started_s`` its first press."""

    kind: GestureKind
    at_s: float
    started_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.kind, GestureKind):
            raise LocalProtocolError(f"Gesture.kind: expected GestureKind, got {self.kind!r}")
        if not (math.isfinite(self.at_s) and math.isfinite(self.started_s)):
            raise LocalProtocolError("Gesture: times must be finite")
        if self.started_s > self.at_s:
            raise LocalProtocolError(f"Gesture: started_s {self.started_s} > at_s {self.at_s}")


ButtonOutput = Gesture | InputIgnored
"""What the recognizer returns: gestures, and input it did not take at face value."""


@dataclass(frozen=True, slots=True)
class GestureConfig:
    """Timing of the Event button; validated once, when made (``ConfigError`` names the field)."""

    debounce_s: float = 0.03
    """The line must stay at a level this long after its last edge; edges sooner are bounce."""
    double_press_window_s: float = 0.5
    """Longest gap from the first release to the second press of a double press."""
    hold_s: float = 3.0
    max_click_s: float = 1.0
    """Longest press that still counts as a click."""

    def __post_init__(self) -> None:
        check_number("gestures", "debounce_s", self.debounce_s, 0.001, 0.1, integer=False)
        window = self.double_press_window_s
        check_number("gestures", "double_press_window_s", window, 0.05, 5.0, integer=False)
        check_number("gestures", "hold_s", self.hold_s, 0.2, 30.0, integer=False)
        check_number("gestures", "max_click_s", self.max_click_s, 0.05, 30.0, integer=False)
        if not self.debounce_s < self.max_click_s < self.hold_s:
            raise ConfigError("gestures: need debounce_s < max_click_s < hold_s")
        if self.debounce_s >= self.double_press_window_s:
            raise ConfigError("gestures: need debounce_s < double_press_window_s")


class GestureState(Enum):
    """Where the recognizer is in a press sequence."""

    IDLE = "idle"
    FIRST_DOWN = "first press down"
    FIRST_UP = "first click released, window open"
    SECOND_DOWN = "second press down (double press emitted)"
    HELD = "held (hold emitted)"


class GestureInput(Enum):
    """What the gesture machine reacts to: settled edges, its timers, and lost edges."""

    PRESS = "press"
    RELEASE = "release"
    LONG_RELEASE = "release after longer than max_click_s"
    HOLD_DUE = "hold threshold reached"
    WINDOW_DUE = "double-press window expired"
    LOST_RELEASE = "press while pressed"
    LOST_PRESS = "release while released"


Output = GestureKind | IgnoreReason | None

_S = GestureState
_I = GestureInput

TRANSITIONS: Final[Mapping[tuple[GestureState, GestureInput], tuple[GestureState, Output]]] = (
    MappingProxyType(
        {
            (_S.IDLE, _I.PRESS): (_S.FIRST_DOWN, None),
            (_S.IDLE, _I.LOST_PRESS): (_S.IDLE, IgnoreReason.MISSED_PRESS),
            (_S.FIRST_DOWN, _I.RELEASE): (_S.FIRST_UP, None),
            (_S.FIRST_DOWN, _I.LONG_RELEASE): (_S.IDLE, IgnoreReason.NOT_A_CLICK),
            (_S.FIRST_DOWN, _I.HOLD_DUE): (_S.HELD, GestureKind.HOLD),
            (_S.FIRST_DOWN, _I.LOST_RELEASE): (_S.FIRST_DOWN, IgnoreReason.MISSED_RELEASE),
            (_S.FIRST_UP, _I.PRESS): (_S.SECOND_DOWN, GestureKind.DOUBLE_PRESS),
            (_S.FIRST_UP, _I.WINDOW_DUE): (_S.IDLE, GestureKind.SINGLE_PRESS),
            # The second press was lost: it may have been a double press, so guess nothing.
            (_S.FIRST_UP, _I.LOST_PRESS): (_S.IDLE, IgnoreReason.MISSED_PRESS),
            (_S.SECOND_DOWN, _I.RELEASE): (_S.IDLE, None),
            (_S.SECOND_DOWN, _I.LOST_RELEASE): (_S.FIRST_DOWN, IgnoreReason.MISSED_RELEASE),
            (_S.HELD, _I.RELEASE): (_S.IDLE, None),
            (_S.HELD, _I.LOST_RELEASE): (_S.FIRST_DOWN, IgnoreReason.MISSED_RELEASE),
        }
    )
)
"""Every possible ``(state, input)`` pair: the next state and what to report."""


def next_step(state: GestureState, event: GestureInput) -> tuple[GestureState, Output]:
    """Look up ``(state, event)``; a missing pair is a bug in the recognizer, not odd input."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(
            f"gesture input {event.value!r} cannot happen in state {state.value!r}"
        ) from None


class GestureRecognizer:
    """Turns the Event button's raw edges into gestures; see the module docstring."""

    def __init__(self, config: GestureConfig | None = None) -> None:
        self.config = config if config is not None else GestureConfig()
        self._line = DigitalInput(BUTTON_NAME, self.config.debounce_s)
        self._state = GestureState.IDLE
        self._press_s = 0.0
        self._release_s = 0.0
        self._started_s = 0.0
        self._now = -math.inf
        self._decided_s = -math.inf
        """The latest decision or edge: a late edge is never placed before it."""

    @property
    def state(self) -> GestureState:
        """The gesture machine's state."""
        return self._state

    @property
    def pressed(self) -> bool:
        """Whether the button is down, as far as settled edges tell."""
        return self._line.level

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run next, or None; never before the last ``now`` (a
        deadline a late edge left behind it is due at once)."""
        due = self._due()
        return None if due is None else max(due, self._now)

    def _due(self) -> float | None:
        line = self._line.next_deadline()
        # While the line is unsettled the gesture timers wait: the settling edge came first.
        return line if line is not None else self._timer()

    def press(self, now: float) -> list[ButtonOutput]:
        """A raw press edge at ``now``."""
        return self.edge(pressed=True, now=now)

    def release(self, now: float) -> list[ButtonOutput]:
        """A raw release edge at ``now``."""
        return self.edge(pressed=False, now=now)

    def edge(self, *, pressed: bool, now: float, at: float | None = None) -> list[ButtonOutput]:
        """A raw edge (``pressed`` or released) at ``now``, or one that happened earlier, at
        ``at``, and arrived late (see the module docstring); returns what was decided."""
        self._now = check_now("gesture recognizer", self._now, now)
        when = self._now if at is None else self._late(at)
        # Deadlines up to the edge only: those after it wait for the input after it.
        out = self._run_due(when)
        if self._line.burst_since is None and pressed == self._line.raw_level:
            # The settled line repeats its level: the opposite edge never reached us.
            lost = GestureInput.LOST_RELEASE if pressed else GestureInput.LOST_PRESS
            out.extend(self._apply(lost, when, when))
        else:
            out.extend(self._from_line(self._line.change(pressed, when)))
        self._decided_s = max(self._decided_s, when)
        return out

    def handle_timeout(self, now: float) -> list[ButtonOutput]:
        """Run whatever fell due up to ``now``; calling early is harmless."""
        self._now = check_now("gesture recognizer", self._now, now)
        return self._run_due(self._now)

    def _late(self, at: float) -> float:
        """Where a late edge goes: at ``at``, but not after ``now`` and not before what was
        already decided."""
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise LocalProtocolError(f"gesture recognizer: at must be a finite number, got {at!r}")
        return max(min(float(at), self._now), self._decided_s)

    def _run_due(self, until: float) -> list[ButtonOutput]:
        out: list[ButtonOutput] = []
        while True:
            line = self._line.next_deadline()
            if line is not None:
                if line > until:
                    return out
                out.extend(self._from_line(self._line.handle_timeout(line)))
                continue
            timer = self._timer()
            if timer is None or timer > until:
                return out
            due = GestureInput.HOLD_DUE if self._state is _S.FIRST_DOWN else GestureInput.WINDOW_DUE
            out.extend(self._apply(due, timer, timer))

    def _timer(self) -> float | None:
        if self._state is _S.FIRST_DOWN:
            return self._press_s + self.config.hold_s
        if self._state is _S.FIRST_UP:
            return self._release_s + self.config.double_press_window_s
        return None

    def _from_line(self, events: list[InputEvent]) -> list[ButtonOutput]:
        out: list[ButtonOutput] = []
        for happened in events:
            # The line decides at its deadlines; later gesture decisions are stamped no earlier.
            self._decided_s = max(self._decided_s, happened.at_s)
            if isinstance(happened, InputIgnored):
                out.append(happened)
                continue
            if happened.bounce_edges:
                out.append(_bounce_record(happened))
            out.extend(self._apply(self._classify(happened), happened.since_s, happened.at_s))
        return out

    def _classify(self, change: InputChange) -> GestureInput:
        if change.level:
            return GestureInput.PRESS
        held = change.since_s - self._press_s
        if self._state is _S.FIRST_DOWN and held > self.config.max_click_s:
            return GestureInput.LONG_RELEASE
        return GestureInput.RELEASE

    def _apply(self, event: GestureInput, when: float, at_s: float) -> list[ButtonOutput]:
        """Feed ``event`` that physically happened at ``when`` and was decided at ``at_s``."""
        self._state, output = next_step(self._state, event)
        # Decisions never go back in time, even after a burst longer than a timer.
        at_s = self._decided_s = max(at_s, self._decided_s)
        press_s = self._press_s
        if event in (GestureInput.PRESS, GestureInput.LOST_RELEASE):
            self._press_s = when
            if self._state is _S.FIRST_DOWN:
                self._started_s = when
        elif event in (GestureInput.RELEASE, GestureInput.LONG_RELEASE):
            self._release_s = when
        if isinstance(output, GestureKind):
            return [Gesture(output, at_s, min(self._started_s, at_s))]
        if output is None:
            return []
        level = output is not IgnoreReason.MISSED_PRESS  # the ignored input was a press
        since = press_s if output is IgnoreReason.NOT_A_CLICK else when
        return [InputIgnored(BUTTON_NAME, level, at_s, min(since, at_s), output)]


def _bounce_record(change: InputChange) -> InputIgnored:
    return InputIgnored(
        change.name,
        not change.level,
        change.at_s,
        change.since_s,
        IgnoreReason.CONTACT_BOUNCE,
        change.bounce_edges,
    )
