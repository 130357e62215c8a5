"""The Event button's gesture recognizer: clean edges, bounce, glitches, lost edges, any input.

Gestures from the seeded bounce generator must come out exactly as requested over hundreds of
seeds; a rule-based machine then throws arbitrary edges and clock jumps at the recognizer and
checks it never raises, never asks to be woken in the past, never goes back in time and never
makes more gestures than there were presses.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from device.errors import ConfigError
from device.gestures import (
    TRANSITIONS,
    ButtonOutput,
    Gesture,
    GestureConfig,
    GestureInput,
    GestureKind,
    GestureRecognizer,
    GestureState,
    next_step,
)
from device.inputs import IgnoreReason, InputIgnored
from protocol.errors import LocalProtocolError
from sim.sensors_button import GESTURES, edges_for, real_edge_count
from tests.fuzz import STATEFUL_EXAMPLES

EXPECTED = {
    "press": GestureKind.SINGLE_PRESS,
    "double_press": GestureKind.DOUBLE_PRESS,
    "hold": GestureKind.HOLD,
}


def run_timers(rec: GestureRecognizer, until: float) -> list[ButtonOutput]:
    """Wake the recognizer at each deadline up to ``until``, as an event loop's timer would."""
    out: list[ButtonOutput] = []
    while (deadline := rec.next_deadline()) is not None and deadline <= until:
        out += rec.handle_timeout(deadline)
        # A deadline that survives its own timeout would spin an event loop forever.
        assert (rec.next_deadline() or math.inf) > deadline
    return out


def drive(
    rec: GestureRecognizer, edges: Iterable[tuple[float, bool]], end: float, *, eager: bool = True
) -> list[ButtonOutput]:
    """Feed raw edges; with ``eager`` the timers run on time, else only at ``end``."""
    out: list[ButtonOutput] = []
    for time_s, pressed in edges:
        if eager:
            out += run_timers(rec, time_s)
        out += rec.edge(pressed=pressed, now=time_s)
    return out + run_timers(rec, end) + rec.handle_timeout(end)


def gestures(outputs: Iterable[ButtonOutput]) -> list[GestureKind]:
    return [out.kind for out in outputs if isinstance(out, Gesture)]


def ignored(outputs: Iterable[ButtonOutput], reason: IgnoreReason) -> list[InputIgnored]:
    return [out for out in outputs if isinstance(out, InputIgnored) and out.reason is reason]


def test_double_press_from_clean_edges() -> None:
    rec = GestureRecognizer()
    out = drive(rec, [(1.0, True), (1.15, False), (1.4, True), (1.5, False)], end=10.0)
    assert out == [Gesture(GestureKind.DOUBLE_PRESS, 1.4 + 0.03, started_s=1.0)]
    assert rec.state is GestureState.IDLE


def test_hold_is_emitted_at_the_threshold_while_still_held() -> None:
    rec = GestureRecognizer()
    assert rec.press(2.0) == []
    assert rec.next_deadline() == pytest.approx(2.03)
    assert rec.handle_timeout(2.03) == []
    assert rec.pressed
    assert rec.next_deadline() == 5.0
    assert rec.handle_timeout(4.999) == []
    assert rec.handle_timeout(5.0) == [Gesture(GestureKind.HOLD, 5.0, started_s=2.0)]
    held = rec.state
    assert drive(rec, [(9.0, False)], end=20.0) == []
    assert (held, rec.state) == (GestureState.HELD, GestureState.IDLE)


def test_single_press_when_the_window_expires() -> None:
    rec = GestureRecognizer()
    assert drive(rec, [(0.0, True), (0.2, False)], end=0.69) == []
    assert rec.handle_timeout(0.7) == [Gesture(GestureKind.SINGLE_PRESS, 0.7, started_s=0.0)]


def test_a_press_between_click_and_hold_is_reported_not_a_click() -> None:
    out = drive(GestureRecognizer(), [(0.0, True), (1.5, False)], end=10.0)
    assert gestures(out) == []
    assert [(o.since_s, o.at_s) for o in ignored(out, IgnoreReason.NOT_A_CLICK)] == [(0.0, 1.53)]


def test_holding_the_second_press_of_a_double_press_does_not_also_stop() -> None:
    out = drive(GestureRecognizer(), [(0.0, True), (0.1, False), (0.3, True), (9.0, False)], 20.0)
    assert gestures(out) == [GestureKind.DOUBLE_PRESS]


def test_a_release_that_began_before_the_threshold_is_not_a_hold() -> None:
    # The release is still bouncing when the hold threshold passes: the edge came first.
    rec = GestureRecognizer()
    drive(rec, [(0.0, True), (2.99, False), (2.995, True), (2.999, False)], end=2.999)
    assert rec.handle_timeout(3.0) == []
    out = rec.handle_timeout(3.029)
    assert gestures(out) == []
    assert len(ignored(out, IgnoreReason.NOT_A_CLICK)) == 1


def test_bounce_edges_are_reported_as_ignored_contact_bounce() -> None:
    edges = [
        (0.0, True),
        (0.002, False),
        (0.004, True),
        (0.2, False),
        (0.203, True),
        (0.205, False),
    ]
    out = drive(GestureRecognizer(), edges, end=5.0)
    bounce = ignored(out, IgnoreReason.CONTACT_BOUNCE)
    assert [(b.since_s, b.edges) for b in bounce] == [(0.0, 2), (0.2, 2)]
    assert gestures(out) == [GestureKind.SINGLE_PRESS]


def test_a_pulse_shorter_than_debounce_is_a_glitch_and_no_gesture() -> None:
    out = drive(GestureRecognizer(), [(1.0, True), (1.01, False), (4.0, True), (4.02, False)], 9.0)
    assert gestures(out) == []
    assert [(g.since_s, g.edges) for g in ignored(out, IgnoreReason.GLITCH)] == [(1.0, 2), (4.0, 2)]


def test_a_release_chattering_past_the_window_is_stamped_when_accepted() -> None:
    # A worn contact chatters for 0.7 s after release: the window (from the release) has expired
    # by the time the release is accepted, and the single press must not be dated before that.
    chatter = [(0.1 + 0.02 * i, i % 2 == 1) for i in range(35)]
    out = drive(GestureRecognizer(), [(0.0, True), *chatter], end=5.0)
    assert [type(o).__name__ for o in out] == ["InputIgnored", "Gesture"]
    assert out[1] == Gesture(GestureKind.SINGLE_PRESS, out[0].at_s, started_s=0.0)
    assert out[0].at_s == pytest.approx(0.1 + 0.02 * 34 + 0.03)


@pytest.mark.parametrize("name", GESTURES)
def test_generator_gestures_are_recognised_for_every_seed(name: str) -> None:
    for seed in range(500):
        edges = edges_for(name, 5.0, random.Random(seed))
        out = drive(GestureRecognizer(), edges, end=30.0)
        assert gestures(out) == [EXPECTED[name]], (seed, edges, out)
        bounce = sum(b.edges for b in ignored(out, IgnoreReason.CONTACT_BOUNCE))
        assert bounce == len(edges) - real_edge_count(name), (seed, edges, out)
        assert len(out) == 1 + len(ignored(out, IgnoreReason.CONTACT_BOUNCE)), (seed, out)


def test_late_timers_change_nothing() -> None:
    """Outputs depend on the edges only, not on when the caller got round to the timers."""
    for seed in range(200):
        rng = random.Random(seed)
        edges = [edge for i in range(3) for edge in edges_for(rng.choice(GESTURES), 10.0 * i, rng)]
        eager = drive(GestureRecognizer(), edges, end=40.0, eager=True)
        assert drive(GestureRecognizer(), edges, end=40.0, eager=False) == eager


@given(
    names=st.lists(st.sampled_from(GESTURES), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_series_of_gestures_is_recognised_in_order(names: list[str], seed: int) -> None:
    rng = random.Random(seed)
    edges = [edge for i, name in enumerate(names) for edge in edges_for(name, 8.0 * i, rng)]
    out = drive(GestureRecognizer(), edges, end=8.0 * len(names) + 10.0)
    assert gestures(out) == [EXPECTED[name] for name in names]


def test_press_without_release_restarts_the_sequence_and_a_hold_still_works() -> None:
    rec = GestureRecognizer()
    out = drive(rec, [(0.0, True), (0.5, True)], end=3.49)
    assert [(o.at_s, o.level) for o in ignored(out, IgnoreReason.MISSED_RELEASE)] == [(0.5, True)]
    assert gestures(out) == []
    assert rec.handle_timeout(3.5) == [Gesture(GestureKind.HOLD, 3.5, started_s=0.5)]


def test_release_without_press_is_reported_and_resynced() -> None:
    rec = GestureRecognizer()
    out = drive(rec, [(0.0, False)], end=1.0)
    assert [o.at_s for o in ignored(out, IgnoreReason.MISSED_PRESS)] == [0.0]
    assert gestures(drive(rec, [(2.0, True), (2.1, False), (2.3, True), (2.4, False)], 5.0)) == [
        GestureKind.DOUBLE_PRESS
    ]


def test_a_lost_second_press_abandons_the_window_without_guessing() -> None:
    out = drive(GestureRecognizer(), [(0.0, True), (0.1, False), (0.4, False)], end=5.0)
    assert gestures(out) == []
    assert len(ignored(out, IgnoreReason.MISSED_PRESS)) == 1


DOUBLE = [(1.0, True), (1.08, False), (1.2, True), (1.28, False)]
"""A double press with human timing (80 ms clicks, 120 ms gap)."""


def deliver_late(
    rec: GestureRecognizer, edges: list[tuple[float, bool]], delivered: list[float], end: float
) -> list[ButtonOutput]:
    """Each edge reaches the caller at its ``delivered`` time (a stall, a queue) and is passed
    with its own time as ``at``; the caller's clock runs the timers in between, as a camera loop
    does while the late edges wait behind the stall."""
    out: list[ButtonOutput] = []
    for (time_s, pressed), now in zip(edges, delivered, strict=True):
        out += rec.handle_timeout(now)
        out += rec.edge(pressed=pressed, now=now, at=time_s)
    return out + run_timers(rec, end) + rec.handle_timeout(end)


@pytest.mark.parametrize("stall_s", [0.0, 0.03, 0.05, 0.07, 0.15, 0.3])
def test_a_second_press_delivered_after_a_stall_is_still_a_double_press(stall_s: float) -> None:
    """The host stalls from just before the second press; the press reaches the recognizer only
    at the end of the stall, after the caller's clock (and timers) ran to then. Decided by the
    edges' own times, the gesture and its time are those of a timely delivery."""
    timely = drive(GestureRecognizer(), DOUBLE, end=5.0)
    delivered = [1.0, 1.08, 1.2 + stall_s, max(1.28, 1.2 + stall_s)]
    late = deliver_late(GestureRecognizer(), DOUBLE, delivered, end=5.0)
    assert late == timely == [Gesture(GestureKind.DOUBLE_PRESS, 1.23, started_s=1.0)]


def test_edges_queued_behind_a_stall_are_all_taken_before_a_deadline_is_judged() -> None:
    """A 15 ms glitch and a click, all four edges delivered at once after a 0.4 s stall: the
    press's debounce deadline passed during the stall, yet the release queued behind it makes it
    a glitch, as it was on the line."""
    edges = [(1.0, True), (1.015, False), (1.1, True), (1.18, False)]
    timely = drive(GestureRecognizer(), edges, end=5.0)
    rec = GestureRecognizer()
    out = rec.handle_timeout(1.4)
    for time_s, pressed in edges:
        out += rec.edge(pressed=pressed, now=1.4, at=time_s)
    assert rec.next_deadline() == 1.4  # the debounce of the click's release: due at once
    out += run_timers(rec, 5.0) + rec.handle_timeout(5.0)
    assert out == timely
    assert [type(o).__name__ for o in out] == ["InputIgnored", "Gesture"]


def test_a_late_edge_never_goes_before_a_decision_already_taken() -> None:
    """The window closed (a single press) at 0.58 before the second press, stamped 0.5, arrived:
    a decision cannot be undone, so the press counts from then."""
    rec = GestureRecognizer()
    out = drive(rec, [(0.0, True), (0.08, False)], end=0.6)
    assert gestures(out) == [GestureKind.SINGLE_PRESS]
    assert rec.edge(pressed=True, now=0.7, at=0.5) == []
    assert rec.next_deadline() == pytest.approx(0.7)  # 0.58 + the debounce, behind now
    out = rec.handle_timeout(0.7)
    assert rec.handle_timeout(3.58) == [Gesture(GestureKind.HOLD, 3.58, started_s=0.58)]
    assert out == []
    with pytest.raises(LocalProtocolError, match="finite"):
        rec.edge(pressed=False, now=4.0, at=math.nan)


def test_time_going_backwards_or_not_finite_is_the_callers_bug() -> None:
    rec = GestureRecognizer()
    rec.press(1.0)
    with pytest.raises(LocalProtocolError, match="backwards"):
        rec.release(0.5)
    with pytest.raises(LocalProtocolError, match="backwards"):
        rec.handle_timeout(0.9)
    for bad in (math.nan, math.inf):
        with pytest.raises(LocalProtocolError, match="finite"):
            rec.handle_timeout(bad)


@pytest.mark.parametrize("state", GestureState)
@pytest.mark.parametrize("event", GestureInput)
def test_every_state_input_pair_is_in_the_table_or_raises(
    state: GestureState, event: GestureInput
) -> None:
    if (state, event) in TRANSITIONS:
        assert next_step(state, event) == TRANSITIONS[state, event]
    else:
        with pytest.raises(LocalProtocolError, match=re.escape(state.value)):
            next_step(state, event)


@pytest.mark.parametrize(
    "fields",
    [
        {"debounce_s": 0.0},
        {"debounce_s": True},
        {"hold_s": math.nan},
        {"double_press_window_s": "0.5"},
        {"max_click_s": 3.0},  # not shorter than hold_s
        {"max_click_s": 0.05, "debounce_s": 0.06},
        {"double_press_window_s": 0.05, "debounce_s": 0.06, "max_click_s": 0.5},
    ],
)
def test_bad_config_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="gestures"):
        GestureConfig(**fields)  # type: ignore[arg-type]


_STEP = st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.05, 1.0), st.floats(1.0, 5.0))


class AnyEdges(RuleBasedStateMachine):
    """Arbitrary edges and clock jumps: the recognizer keeps every promise it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = GestureRecognizer()
        self.now = 0.0
        self.presses = 0
        self.outputs: list[ButtonOutput] = []

    def _take(self, outputs: list[ButtonOutput]) -> None:
        for out in outputs:
            assert out.at_s <= self.now
        self.outputs += outputs

    @rule(pressed=st.booleans(), step=_STEP)
    def edge(self, pressed: bool, step: float) -> None:
        self.now += step
        self.presses += pressed
        self._take(self.rec.edge(pressed=pressed, now=self.now))

    @rule(count=st.integers(2, 40), step=st.floats(0.001, 0.029), pressed=st.booleans())
    def chatter(self, count: int, step: float, pressed: bool) -> None:
        for i in range(count):
            self.edge(pressed=pressed == (i % 2 == 0), step=step)

    @rule(step=_STEP)
    def timeout(self, step: float) -> None:
        self.now += step
        self._take(self.rec.handle_timeout(self.now))

    @rule()
    def timeout_at_deadline(self) -> None:
        deadline = self.rec.next_deadline()
        if deadline is not None:
            self.now = deadline
            self._take(self.rec.handle_timeout(self.now))

    @invariant()
    def deadline_is_never_in_the_past(self) -> None:
        deadline = self.rec.next_deadline()
        assert deadline is None or deadline > self.now

    @invariant()
    def decisions_never_go_back_in_time(self) -> None:
        times = [out.at_s for out in self.outputs]
        assert times == sorted(times)

    @invariant()
    def no_more_gestures_than_presses(self) -> None:
        kinds = gestures(self.outputs)
        used = sum(2 if kind is GestureKind.DOUBLE_PRESS else 1 for kind in kinds)
        assert used <= self.presses


AnyEdges.TestCase.settings = settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=60)
TestAnyEdges = AnyEdges.TestCase
