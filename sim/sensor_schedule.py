"""Sensor actions of a scenario, turned into raw inputs at their instants of virtual time.

A ``button`` action becomes a few edges over a second or three, an ``imu`` episode a batch of
samples per second, an ``audio`` clip one block, a ``gps`` route one fix per second. Each input
is scheduled at the moment the hardware would report it, and the runner hands it to the camera's
``SensorHub`` then, so debouncing, gesture timers and detectors see the timing they would see on
a real camera. Every random draw comes from a generator seeded by the device seed and the
action's place in the timeline.

Hardware actions (``HARDWARE_ACTIONS``: ``button``, ``input``, ``speed``) are what a bench
microcontroller reports; where their raw inputs go is the schedule's ``hardware_inputs``:

- ``"hub"`` (virtual time, ``bwc-sim scenario``): straight to the ``SensorHub`` at their instant;
- ``"backend"``: as ``device.backends`` inputs (``ButtonInput``, ``LineInput``, ``SpeedInput``,
  stamped with their instant as ``hw_time_s``) to ``sink`` at their instant, e.g.
  ``SimBackend.inject``, so they reach the hub through the hardware bridge as serial input does;
- ``"external"``: not at all; real or fake hardware plays them (the bench microcontroller
  reads the same scenario file). The officer's stated reason before a hold is speech, not
  hardware: it reaches the hub in every mode.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from device.backends.events import ButtonInput, HardwareInput, LineInput, SpeedInput
from device.sensorhub import SensorHub
from sim.scenario_timeline import Audio, Button, Gps, Imu, Input, Speed
from sim.sensors import CLIPS, EPISODES, gps_track
from sim.sensors_button import DEFAULT_MODEL, edges_for

Deliver = Callable[[SensorHub, float], None]
"""Hands one raw input to the hub at virtual time ``now``."""

FloatArray = npt.NDArray[np.float64]

SensorAction = Button | Input | Speed | Imu | Audio | Gps

HARDWARE_ACTIONS: Final = (Button, Input, Speed)
"""Sensor actions a hardware backend reports (the rest are the camera's own sensors)."""

HardwareInputs = Literal["hub", "backend", "external"]
"""Where hardware actions' raw inputs go (module docstring)."""

HardwareSink = Callable[[HardwareInput], None]
"""Takes a hardware input at its instant (``SimBackend.inject``)."""

NO_BOUNCE = replace(DEFAULT_MODEL, max_bounces=0)

IMU_BATCH = 100
"""IMU samples per delivery: one second at 100 Hz, as a sensor's FIFO would be drained."""


@dataclass(order=True, slots=True)
class _Item:
    at_s: float
    seq: int
    deliver: Deliver = field(compare=False)


class SensorSchedule:
    """Raw inputs waiting for their time, in time order (ties in the order they were added)."""

    def __init__(
        self, hardware_inputs: HardwareInputs = "hub", sink: HardwareSink | None = None
    ) -> None:
        if (hardware_inputs == "backend") != (sink is not None):
            raise ValueError("a sink is needed with hardware_inputs='backend', and only then")
        self.hardware_inputs = hardware_inputs
        self._sink = sink
        self.handed = 0
        """Hardware inputs handed to the sink so far."""
        self._heap: list[_Item] = []
        self._seq = 0

    def next_time(self) -> float | None:
        """When the next input is due, or None."""
        return self._heap[0].at_s if self._heap else None

    def pop_due(self, now: float) -> list[tuple[float, Deliver]]:
        """The inputs due at or before ``now``, in order."""
        due = []
        while self._heap and self._heap[0].at_s <= now:
            item = heapq.heappop(self._heap)
            due.append((item.at_s, item.deliver))
        return due

    def clear(self) -> None:
        """Drop everything (the camera lost power: its sensors stop reporting)."""
        self._heap.clear()

    def add(self, at_s: float, deliver: Deliver) -> None:
        """Deliver an input at ``at_s``."""
        heapq.heappush(self._heap, _Item(at_s, self._seq, deliver))
        self._seq += 1

    def schedule(self, at_s: float, action: SensorAction, seed: int) -> None:
        """Schedule the raw inputs of a sensor ``action`` that starts at ``at_s``."""
        match action:
            case Button():
                self._button(at_s, action, seed)
            case Input(line=line, level=level, glitch_s=glitch_s):
                self._hardware(LineInput(line, level, at_s))
                if glitch_s > 0:  # the line flips and comes back: debouncing must eat it
                    self._hardware(LineInput(line, not level, at_s + glitch_s))
            case Speed(kmh=kmh):
                self._hardware(SpeedInput(kmh, at_s))
            case Imu(episode=name):
                self._imu(at_s, name, seed)
            case Audio(clip=name):
                clip = CLIPS[name](np.random.default_rng(seed))
                end = at_s + clip.seconds
                self.add(end, functools.partial(_audio_clip, at_s, clip.pcm))
            case Gps():
                self._gps(at_s, action, seed)

    def _button(self, at_s: float, action: Button, seed: int) -> None:
        rng = random.Random(seed)
        if action.reason is not None:
            reason = action.reason
            self.add(at_s, lambda hub, _now: setattr(hub, "stated_reason", reason))
        model = DEFAULT_MODEL if action.bounce else NO_BOUNCE
        edges = edges_for(action.gesture, at_s, rng, model)
        for time_s, pressed in edges:
            self._hardware(ButtonInput("event", pressed, time_s))

    def _hardware(self, event: ButtonInput | LineInput | SpeedInput) -> None:
        """Route one raw hardware input as ``hardware_inputs`` says."""
        if self.hardware_inputs == "hub":
            self.add(event.hw_time_s, functools.partial(_to_hub, event))
        elif self._sink is not None:
            self.add(event.hw_time_s, functools.partial(self._to_sink, self._sink, event))

    def _to_sink(
        self, sink: HardwareSink, event: HardwareInput, _hub: SensorHub, _n: float
    ) -> None:
        self.handed += 1
        sink(event)

    def _imu(self, at_s: float, name: str, seed: int) -> None:
        episode = EPISODES[name](np.random.default_rng(seed))
        t = episode.t - episode.t[0] + at_s
        for start in range(0, len(t), IMU_BATCH):
            part = slice(start, start + IMU_BATCH)
            tt, accel, gyro = t[part], episode.accel[part], episode.gyro[part]
            self.add(float(tt[-1]), functools.partial(_imu_batch, tt, accel, gyro))

    def _gps(self, at_s: float, action: Gps, seed: int) -> None:
        track = gps_track(
            np.random.default_rng(seed),
            [(lat, lon) for lat, lon in action.route],
            speed_mps=action.speed_mps,
            jitter_m=action.jitter_m,
            loss=[(start, end) for start, end in action.loss_s],
        )
        for t, fix in track.fixes():
            when = at_s + t
            self.add(when, functools.partial(_gps_fix, when, fix))


def _to_hub(event: ButtonInput | LineInput | SpeedInput, hub: SensorHub, now: float) -> None:
    """The raw input straight to the hub (virtual time: no hardware clock to map)."""
    match event:
        case ButtonInput(pressed=pressed):
            hub.button_edge(pressed=pressed, now=now)
        case LineInput(line=line, level=level):
            hub.line(line, level=level, now=now)
        case SpeedInput(kmh=kmh):
            hub.vehicle_speed(kmh, now)


def _imu_batch(
    t: FloatArray, accel: FloatArray, gyro: FloatArray, hub: SensorHub, now: float
) -> None:
    hub.imu(t, accel, gyro, now)


def _gps_fix(t: float, fix: tuple[float, float] | None, hub: SensorHub, now: float) -> None:
    hub.gps(t, fix, now)


def _audio_clip(t0: float, pcm: npt.NDArray[np.float32], hub: SensorHub, now: float) -> None:
    hub.audio(t0, pcm, now)
