"""Raw edges of the Event button for a requested gesture, with human timing and contact bounce.

The model, per gesture (all times in seconds, every draw from the ``random.Random`` passed in, so
one seed gives one edge list):

- ``"press"``: one click. The press lasts ``click_s`` (uniform).
- ``"double_press"``: two clicks, each lasting ``click_s``, the second press starting ``gap_s``
  (uniform) after the first release.
- ``"hold"``: one press lasting ``hold_s`` (uniform).

The first press lands ``start_jitter_s`` (uniform, from 0) after the requested time, as a finger
does not hit a scheduled instant. After every real edge the contact bounces 0 to
``max_bounces`` times (uniform count). A bounce is a brief reversal: the contact springs back and
makes again, so it is two edges, the opposite level then the real level again, all at offsets
drawn uniformly from ``bounce_offset_s`` after the real edge and sorted. The line therefore
always settles at the real level, ``bounce_offset_s[1]`` at most after the real edge.

The defaults fit the firmware's defaults (``device.gestures.GestureConfig``) with margins: clicks
well under ``max_click_s`` (1 s), gaps well inside the double-press window (0.5 s), holds well
over ``hold_s`` (3 s), and bounce over within 10 ms, a third of ``debounce_s``. Real switches
(tactile domes) bounce for about 1-5 ms; 10 ms is a worn one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from device.errors import ConfigError
from device.validate import check_number

Edge = tuple[float, bool]
"""``(time_s, pressed)``: one raw edge."""

GESTURES: Final = ("press", "double_press", "hold")
"""The gesture names ``edges_for`` knows."""


@dataclass(frozen=True, slots=True)
class ButtonModel:
    """Ranges (low, high) of the human and switch timings; validated when made."""

    click_s: tuple[float, float] = (0.06, 0.3)
    gap_s: tuple[float, float] = (0.08, 0.35)
    hold_s: tuple[float, float] = (3.2, 5.0)
    start_jitter_s: tuple[float, float] = (0.0, 0.05)
    bounce_offset_s: tuple[float, float] = (0.0005, 0.010)
    max_bounces: int = 3

    def __post_init__(self) -> None:
        for name in ("click_s", "gap_s", "hold_s", "start_jitter_s", "bounce_offset_s"):
            low, high = getattr(self, name)
            check_number("button_model", f"{name}[0]", low, 0.0, 60.0, integer=False)
            check_number("button_model", f"{name}[1]", high, low, 60.0, integer=False)
        check_number("button_model", "max_bounces", self.max_bounces, 0, 100, integer=True)
        # Bounce must be over before the next real edge, or the edge list would go back in time.
        shortest = min(self.click_s[0], self.gap_s[0], self.hold_s[0])
        if self.bounce_offset_s[1] >= shortest:
            raise ConfigError("button_model: bounce must end before the shortest press or gap")


DEFAULT_MODEL: Final = ButtonModel()


def edges_for(
    gesture_name: str, at_s: float, rng: random.Random, model: ButtonModel = DEFAULT_MODEL
) -> list[Edge]:
    """Raw edges, bounce included and in time order, for ``gesture_name`` starting near ``at_s``.

    ``gesture_name`` is one of ``GESTURES``; anything else raises ``ValueError``.
    """
    if gesture_name not in GESTURES:
        raise ValueError(f"unknown gesture {gesture_name!r}; expected one of {GESTURES}")
    start = at_s + _draw(rng, model.start_jitter_s)
    if gesture_name == "hold":
        real = [(start, True), (start + _draw(rng, model.hold_s), False)]
    else:
        release = start + _draw(rng, model.click_s)
        real = [(start, True), (release, False)]
        if gesture_name == "double_press":
            second = release + _draw(rng, model.gap_s)
            real += [(second, True), (second + _draw(rng, model.click_s), False)]
    edges: list[Edge] = []
    for time_s, pressed in real:
        edges.append((time_s, pressed))
        edges.extend(_bounce(time_s, pressed, rng, model))
    return edges


def real_edge_count(gesture_name: str) -> int:
    """How many of ``edges_for``'s edges are real (the rest are bounce)."""
    return 4 if gesture_name == "double_press" else 2


def _bounce(time_s: float, pressed: bool, rng: random.Random, model: ButtonModel) -> list[Edge]:
    """Reversals after the real edge at ``time_s``: pairs of (opposite level, real level)."""
    count = rng.randint(0, model.max_bounces)
    offsets = sorted(_draw(rng, model.bounce_offset_s) for _ in range(2 * count))
    return [(time_s + offset, pressed == (i % 2 == 1)) for i, offset in enumerate(offsets)]


def _draw(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)
