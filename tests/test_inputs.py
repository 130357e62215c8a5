"""Debounced level inputs and the vehicle speed threshold.

``DigitalInput`` is checked against a plain reference model: a level is accepted exactly when the
raw line has stayed at it for ``debounce_s``. ``SpeedThreshold`` is checked for hold on both
sides, hysteresis, reports of brief excursions and invalid samples, and, under Hypothesis, that
every change it accepts was earned by samples over its whole hold time.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import ConfigError
from device.inputs import (
    DigitalInput,
    IgnoreReason,
    InputChange,
    InputEvent,
    InputIgnored,
    SpeedThreshold,
)
from protocol.errors import LocalProtocolError
from tests.fuzz import FUZZ_EXAMPLES


def settle(line: DigitalInput | SpeedThreshold, until: float) -> list[InputEvent]:
    """Wake the input at each deadline up to ``until``."""
    out: list[InputEvent] = []
    while (deadline := line.next_deadline()) is not None and deadline <= until:
        out += line.handle_timeout(deadline)
        # A deadline that survives its own timeout would spin an event loop forever.
        assert (line.next_deadline() or math.inf) > deadline
    return out


def feed(line: DigitalInput, edges: list[tuple[float, bool]], end: float) -> list[InputEvent]:
    out: list[InputEvent] = []
    for time_s, level in edges:
        out += settle(line, time_s) + line.change(level=level, now=time_s)
    return out + settle(line, end)


def test_a_level_is_accepted_after_debounce_with_its_bounce_counted() -> None:
    holster = DigitalInput("holster", 0.05)
    assert holster.change(level=True, now=1.0) == []
    assert holster.change(level=False, now=1.004) == []
    assert holster.change(level=True, now=1.006) == []
    before = holster.level
    assert holster.next_deadline() == pytest.approx(1.056)
    assert holster.handle_timeout(1.05) == []
    [change] = holster.handle_timeout(1.056)
    assert change == InputChange(
        "holster", level=True, at_s=change.at_s, since_s=1.0, bounce_edges=2
    )
    assert change.at_s == pytest.approx(1.056)
    assert (before, holster.level) == (False, True)
    assert holster.next_deadline() is None


def test_a_glitch_shorter_than_debounce_is_filtered_and_reported() -> None:
    siren = DigitalInput("siren", 0.1)
    out = feed(siren, [(5.0, True), (5.03, False)], end=10.0)
    assert out == [
        InputIgnored(
            "siren", level=True, at_s=5.13, since_s=5.0, reason=IgnoreReason.GLITCH, edges=2
        )
    ]
    assert not siren.level


def test_a_repeated_level_is_a_no_op_when_settled_and_restarts_the_wait_in_a_burst() -> None:
    door = DigitalInput("door", 0.1, initial=True)
    assert feed(door, [(1.0, True)], end=5.0) == []
    assert door.change(level=False, now=6.0) == []
    assert door.change(level=False, now=6.08) == []  # the True edge in between was lost
    assert door.next_deadline() == pytest.approx(6.18)
    assert feed(door, [], end=7.0) == [
        InputChange("door", level=False, at_s=6.18, since_s=6.0, bounce_edges=1)
    ]


def test_late_caller_gets_the_same_decision_times() -> None:
    taser = DigitalInput("taser_armed", 0.02)
    assert taser.change(level=True, now=0.0) == []
    assert taser.change(level=False, now=3.0) == [
        InputChange("taser_armed", level=True, at_s=0.02, since_s=0.0)
    ]
    assert taser.handle_timeout(9.0) == [
        InputChange("taser_armed", level=False, at_s=3.02, since_s=3.0)
    ]


def test_digital_input_refuses_bad_config_and_backwards_time() -> None:
    with pytest.raises(ConfigError, match=r"lightbar\.debounce_s"):
        DigitalInput("lightbar", 0.0)
    with pytest.raises(LocalProtocolError, match="name"):
        DigitalInput("", 0.1)
    line = DigitalInput("lightbar", 0.1)
    line.change(level=True, now=2.0)
    with pytest.raises(LocalProtocolError, match="backwards"):
        line.change(level=False, now=1.0)
    with pytest.raises(LocalProtocolError, match="finite"):
        line.handle_timeout(math.nan)


def reference(edges: list[tuple[float, bool]], debounce_s: float) -> list[tuple[bool, float]]:
    """Accepted (level, at_s): each raw level that lasted ``debounce_s`` and differs."""
    accepted, out = False, list[tuple[bool, float]]()
    if not edges:
        return out
    ends = [time_s for time_s, _ in edges[1:]] + [math.inf]
    for (start, level), end in zip(edges, ends, strict=True):
        if start + debounce_s <= end and level != accepted:
            accepted = level
            out.append((level, start + debounce_s))
    return out


_GAPS = st.lists(st.one_of(st.floats(0.0, 0.06), st.floats(0.06, 2.0)), max_size=40)


@settings(max_examples=FUZZ_EXAMPLES)
@given(gaps=_GAPS, debounce_s=st.sampled_from([0.01, 0.03, 0.05]))
def test_digital_input_matches_the_reference_model(gaps: list[float], debounce_s: float) -> None:
    edges, now = [], 0.0
    for i, gap in enumerate(gaps):
        now += gap
        edges.append((now, i % 2 == 0))
    line = DigitalInput("lightbar", debounce_s)
    out = feed(line, edges, end=now + 10.0)
    changes = [(o.level, o.at_s) for o in out if isinstance(o, InputChange)]
    assert changes == reference(edges, debounce_s)
    # Every edge is accounted for: a change's first edge, its bounce, or part of a glitch.
    counted = sum(1 + o.bounce_edges if isinstance(o, InputChange) else o.edges for o in out)
    assert counted == len(edges)
    assert line.next_deadline() is None


def run(speed: SpeedThreshold, samples: list[tuple[float, float]]) -> list[InputEvent]:
    out: list[InputEvent] = []
    for time_s, kmh in samples:
        out += settle(speed, time_s) + speed.sample(kmh, time_s)
    return out


def test_speed_turns_on_after_hold_and_ignores_brief_excursions() -> None:
    speed = SpeedThreshold(80.0, 10.0, 2.0)
    out = run(speed, [(0.0, 50.0), (1.0, 85.0), (2.5, 79.0), (3.0, 90.0), (4.9, 95.0)])
    assert out == [
        InputIgnored(
            "speed", level=True, at_s=2.5, since_s=1.0, reason=IgnoreReason.BRIEF_EXCURSION
        )
    ]
    assert speed.next_deadline() == 5.0
    assert speed.handle_timeout(5.0) == [InputChange("speed", level=True, at_s=5.0, since_s=3.0)]


def test_speed_hysteresis_keeps_the_level_inside_the_band() -> None:
    speed = SpeedThreshold(80.0, 10.0, 2.0)
    run(speed, [(0.0, 100.0), (2.0, 100.0)])
    assert speed.level
    # 75 is under the threshold but inside the band: still over, no pending crossing.
    assert run(speed, [(3.0, 75.0), (10.0, 71.0)]) == []
    assert speed.next_deadline() is None
    out = run(speed, [(11.0, 60.0), (20.0, 60.0)])
    assert out == [InputChange("speed", level=False, at_s=13.0, since_s=11.0)]
    assert not speed.level


def test_speed_with_zero_hold_changes_on_the_sample() -> None:
    speed = SpeedThreshold(30.0, 5.0, 0.0)
    assert speed.sample(31.0, 1.0) == [InputChange("speed", level=True, at_s=1.0, since_s=1.0)]
    assert speed.sample(26.0, 2.0) == []
    assert speed.sample(24.0, 3.0) == [InputChange("speed", level=False, at_s=3.0, since_s=3.0)]


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, True])
def test_invalid_speed_samples_are_reported_and_change_nothing(bad: float) -> None:
    speed = SpeedThreshold(80.0, 10.0, 2.0)
    speed.sample(90.0, 0.0)
    out = speed.sample(bad, 1.0)
    assert out == [
        InputIgnored(
            "speed", level=False, at_s=1.0, since_s=1.0, reason=IgnoreReason.INVALID_SAMPLE
        )
    ]
    assert speed.handle_timeout(2.0) == [InputChange("speed", level=True, at_s=2.0, since_s=0.0)]


@pytest.mark.parametrize(
    ("threshold", "hysteresis", "hold", "field"),
    [(-1.0, 0.0, 1.0, "threshold_kmh"), (50.0, 60.0, 1.0, "hysteresis_kmh"),
     (50.0, 5.0, math.nan, "hold_s")],
)  # fmt: skip
def test_speed_config_is_validated(
    threshold: float, hysteresis: float, hold: float, field: str
) -> None:
    with pytest.raises(ConfigError, match=f"speed.{field}"):
        SpeedThreshold(threshold, hysteresis, hold)


@given(
    samples=st.lists(
        st.tuples(st.floats(0.001, 3.0), st.one_of(st.floats(0.0, 200.0), st.just(math.nan))),
        max_size=60,
    ),
    hold=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_every_speed_change_was_earned_over_its_hold(
    samples: list[tuple[float, float]], hold: float
) -> None:
    # Times strictly increase so "the speed in force at since_s" is one sample.
    speed, now, timeline = SpeedThreshold(80.0, 10.0, hold), 0.0, []
    for gap, kmh in samples:
        now += gap
        timeline.append((now, kmh))
    out = run(speed, timeline)
    changes = [o for o in out if isinstance(o, InputChange)]
    assert [c.level for c in changes] == [i % 2 == 0 for i in range(len(changes))]
    for change in changes:
        assert change.at_s == change.since_s + hold
        valid = [(t, kmh) for t, kmh in timeline if not math.isnan(kmh)]
        # The speed in force at since_s (the last sample then), and every one until at_s.
        held = [kmh for t, kmh in valid if t <= change.since_s][-1:]
        held += [kmh for t, kmh in valid if change.since_s < t < change.at_s]
        assert held
        assert all(kmh > 80.0 if change.level else kmh < 70.0 for kmh in held)
    deadline = speed.next_deadline()
    assert deadline is None or deadline > now or not timeline
