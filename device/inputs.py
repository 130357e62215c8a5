"""Input conditioning for level inputs: holster, vehicle lines, TASER, vehicle speed.

Pure and sans-clock, like the protocol machines: every entry point takes ``now`` (monotonic
seconds), ``next_deadline()`` says when ``handle_timeout(now)`` must run, and every call first
settles whatever fell due up to ``now``, so a caller that is late loses nothing. Results carry two
times: ``at_s``, when the decision was made (the deadline that made it, never the possibly late
``now`` of the call), and ``since_s``, when the level physically changed.

Nothing is dropped silently: a glitch too short to accept, or a sample that cannot be a speed,
comes back as ``InputIgnored`` with a reason, so the camera can write it to the audit log.

``DigitalInput`` debounces by persistence: a new level is accepted once the raw line has stayed
there for ``debounce_s`` since its last edge. Contact bounce after a real edge therefore delays
acceptance by the bounce time and is counted, and a pulse that reverts within ``debounce_s`` is a
glitch. ``SpeedThreshold`` turns a speed stream into an "over the limit" level with hysteresis
and a hold time on both sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from device.validate import check_number
from protocol.errors import LocalProtocolError


class IgnoreReason(Enum):
    """Why raw input was not taken at face value; the value is the audit-log wording."""

    CONTACT_BOUNCE = "contact bounce"
    GLITCH = "glitch: level reverted within the debounce time"
    BRIEF_EXCURSION = "excursion shorter than the hold time"
    INVALID_SAMPLE = "sample is not a valid value"
    MISSED_RELEASE = "press while already pressed: a release was lost, sequence restarted"
    MISSED_PRESS = "release while not pressed: a press was lost, sequence abandoned"
    NOT_A_CLICK = "press too long for a click and too short for a hold"


@dataclass(frozen=True, slots=True)
class InputChange:
    """An input's accepted level changed.

    ``at_s``: when the change was accepted; ``since_s``: when the line first moved to the new
    level; ``bounce_edges``: raw edges in between that were contact bounce.
    """

    name: str
    level: bool
    at_s: float
    since_s: float
    bounce_edges: int = 0

    def __post_init__(self) -> None:
        _check_record(self.name, self.at_s, self.since_s, self.bounce_edges)


@dataclass(frozen=True, slots=True)
class InputIgnored:
    """Raw input that changed nothing, and why (for the audit log).

    ``level`` is the level the ignored input asked for; ``since_s`` when it began; ``at_s`` when
    it was judged; ``edges`` how many raw edges or samples the record covers.
    """

    name: str
    level: bool
    at_s: float
    since_s: float
    reason: IgnoreReason
    edges: int = 1

    def __post_init__(self) -> None:
        _check_record(self.name, self.at_s, self.since_s, self.edges)
        if not isinstance(self.reason, IgnoreReason):
            raise LocalProtocolError(
                f"InputIgnored.reason: expected IgnoreReason, got {self.reason!r}"
            )


InputEvent = InputChange | InputIgnored
"""What the conditioners return."""


def _check_record(name: str, at_s: float, since_s: float, count: int) -> None:
    if not (isinstance(name, str) and name):
        raise LocalProtocolError(f"input name must be a non-empty string, got {name!r}")
    if not (math.isfinite(at_s) and math.isfinite(since_s) and since_s <= at_s):
        raise LocalProtocolError(f"{name}: need finite since_s <= at_s, got {since_s}, {at_s}")
    if count < 0:
        raise LocalProtocolError(f"{name}: edge count must be >= 0, got {count}")


def check_now(owner: str, last: float, now: float) -> float:
    """Return ``now`` if it is finite and not before ``last``; else raise ``LocalProtocolError``.

    Time going backwards is the caller's bug (two clocks mixed up), not odd input.
    """
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise LocalProtocolError(f"{owner}: now must be a finite number, got {now!r}")
    if now < last:
        raise LocalProtocolError(f"{owner}: time went backwards ({now} < {last})")
    return float(now)


class DigitalInput:
    """A debounced level input (holster drawn, lightbar, siren, door, TASER armed).

    ``change(level, now)`` reports a raw edge. A level equal to the raw level is a repeated
    report: a no-op while settled, but inside an unsettled burst it means an edge was lost, so
    the persistence wait restarts. The accepted ``level`` starts at ``initial``.
    """

    def __init__(self, name: str, debounce_s: float, *, initial: bool = False) -> None:
        if not (isinstance(name, str) and name):
            raise LocalProtocolError(f"input name must be a non-empty string, got {name!r}")
        check_number(name, "debounce_s", debounce_s, 0.001, 60.0, integer=False)
        self.name = name
        self.debounce_s = float(debounce_s)
        self._level = initial
        self._raw = initial
        self._burst_since: float | None = None
        self._last_edge = -math.inf
        self._edges = 0
        self._now = -math.inf

    @property
    def level(self) -> bool:
        """The accepted (debounced) level."""
        return self._level

    @property
    def raw_level(self) -> bool:
        """The level of the last raw edge, accepted or not."""
        return self._raw

    @property
    def burst_since(self) -> float | None:
        """When the unsettled burst of edges began, or None when the line is settled."""
        return self._burst_since

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must run to settle the line, or None."""
        return None if self._burst_since is None else self._last_edge + self.debounce_s

    def change(self, level: bool, now: float) -> list[InputEvent]:
        """Report a raw edge to ``level`` at ``now``; return what was decided up to ``now``."""
        out = self.handle_timeout(now)
        if level == self._raw:
            if self._burst_since is not None:
                self._last_edge = self._now
                self._edges += 1
            return out
        self._raw = level
        self._last_edge = self._now
        if self._burst_since is None:
            self._burst_since = self._now
            self._edges = 1
        else:
            self._edges += 1
        return out

    def handle_timeout(self, now: float) -> list[InputEvent]:
        """Settle the line if it has been quiet for ``debounce_s``; early calls do nothing."""
        self._now = check_now(self.name, self._now, now)
        deadline = self.next_deadline()
        if deadline is None or deadline > self._now:
            return []
        return [self._settle(deadline)]

    def _settle(self, at_s: float) -> InputEvent:
        assert self._burst_since is not None
        since, edges = self._burst_since, self._edges
        self._burst_since = None
        self._edges = 0
        if self._raw != self._level:
            self._level = self._raw
            return InputChange(self.name, self._level, at_s, since, bounce_edges=edges - 1)
        # Back where it started: the whole burst was a pulse shorter than debounce_s.
        return InputIgnored(self.name, not self._level, at_s, since, IgnoreReason.GLITCH, edges)


class SpeedThreshold:
    """Vehicle speed samples in; an "over threshold" level out, with hysteresis and hold.

    The level turns on once the speed has stayed above ``threshold_kmh`` for ``hold_s``, and off
    once it has stayed below ``threshold_kmh - hysteresis_kmh`` for ``hold_s``. Between samples
    the speed is taken to stay at the last valid one. An excursion that ends before ``hold_s`` is
    reported as ignored; so is a sample that is not a finite, non-negative speed (it changes
    nothing: the last valid speed still holds).
    """

    def __init__(
        self, threshold_kmh: float, hysteresis_kmh: float, hold_s: float, *, name: str = "speed"
    ) -> None:
        if not (isinstance(name, str) and name):
            raise LocalProtocolError(f"input name must be a non-empty string, got {name!r}")
        check_number(name, "threshold_kmh", threshold_kmh, 0.0, 500.0, integer=False)
        check_number(name, "hysteresis_kmh", hysteresis_kmh, 0.0, threshold_kmh, integer=False)
        check_number(name, "hold_s", hold_s, 0.0, 600.0, integer=False)
        self.name = name
        self.threshold_kmh = float(threshold_kmh)
        self.hysteresis_kmh = float(hysteresis_kmh)
        self.hold_s = float(hold_s)
        self._level = False
        self._since: float | None = None
        self._now = -math.inf

    @property
    def level(self) -> bool:
        """True while the vehicle is (accepted as) over the threshold."""
        return self._level

    def next_deadline(self) -> float | None:
        """When the pending crossing will have lasted ``hold_s``, or None."""
        return None if self._since is None else self._since + self.hold_s

    def sample(self, speed_kmh: float, now: float) -> list[InputEvent]:
        """Take a speed sample at ``now``; return what was decided up to ``now``."""
        out = self.handle_timeout(now)
        if not _is_speed(speed_kmh):
            out.append(
                InputIgnored(
                    self.name, self._level, self._now, self._now, IgnoreReason.INVALID_SAMPLE
                )
            )
            return out
        if self._crosses(speed_kmh):
            if self._since is None:
                self._since = self._now
        elif self._since is not None:
            out.append(
                InputIgnored(
                    self.name, not self._level, self._now, self._since, IgnoreReason.BRIEF_EXCURSION
                )
            )
            self._since = None
        # hold_s may be 0: a crossing is then accepted by the sample that makes it.
        out.extend(self.handle_timeout(now))
        return out

    def handle_timeout(self, now: float) -> list[InputEvent]:
        """Accept the pending crossing if it has lasted ``hold_s``; early calls do nothing."""
        self._now = check_now(self.name, self._now, now)
        deadline = self.next_deadline()
        if deadline is None or deadline > self._now or self._since is None:
            return []
        since, self._since = self._since, None
        self._level = not self._level
        return [InputChange(self.name, self._level, deadline, since)]

    def _crosses(self, speed: float) -> bool:
        """Whether ``speed`` argues for the opposite of the accepted level."""
        if self._level:
            return speed < self.threshold_kmh - self.hysteresis_kmh
        return speed > self.threshold_kmh


def _is_speed(value: object) -> bool:
    # A CAN or BLE bridge can deliver NaN or a sentinel; that is input, not a caller's bug.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
