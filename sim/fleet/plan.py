"""What each camera of a fleet is and does: its ID, seed, start time and scenario.

Everything is derived from ``FleetConfig`` alone, so each worker process plans its own cameras and
gets the same answer as any other process (and as a rerun with the same options):

- camera ``i`` starts (connects) at ``i / connect_rate`` fleet seconds;
- its seed is derived from the fleet's seed and its device ID (not its index: a camera keeps its
  seed when ``--id-offset`` moves it to another host);
- ``recording_count`` cameras, a seeded sample, record: the ``--scenario`` file's timeline, or a
  generated recording (power on, a double press at a random time, a hold 20-40 s later);
- the others only power on and buffer, with the same policy and media.

Scenario times are the camera's own: 0 is when it starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Final

from sim.fleet.config import FleetConfig
from sim.media import derive_seed
from sim.scenario import (
    MAX_DURATION_S,
    DoublePress,
    Hold,
    PowerOn,
    Scenario,
    TimelineEntry,
    parse_scenario,
)

TEMPLATE: Final = """
[scenario]
name = "fleet camera"
duration = "168:00:00"
[device]
id = "cam-00001"
seed = 1
[media]
video = "720p30-low"
"""
"""The policy and media of every camera when no ``--scenario`` is given (defaults, 1.4 GB/h)."""

STOP_REASON: Final = "fleet: recording ended"
_SEED_MASK: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class CameraPlan:
    """One camera: ``index`` in the fleet (0-based), when it starts (fleet seconds), its play."""

    index: int
    device_id: str
    seed: int
    start_s: float
    records: bool
    scenario: Scenario


def template(config: FleetConfig) -> Scenario:
    """The scenario the fleet's cameras are made from: ``--scenario`` or the default."""
    scenario = config.scenario()
    return scenario if scenario is not None else parse_scenario(TEMPLATE, "<fleet>")


def recording_set(config: FleetConfig) -> frozenset[int]:
    """The indices of the cameras that record (a sample seeded by the fleet's seed)."""
    rng = random.Random(derive_seed(config.seed, "fleet", "recording-set"))
    return frozenset(rng.sample(range(config.count), config.recording_count))


def worker_indices(config: FleetConfig, worker: int) -> range:
    """The cameras of worker ``worker``: every ``workers``-th, so each connects its share."""
    return range(worker, config.count, config.workers)


def plan_cameras(config: FleetConfig, indices: range) -> list[CameraPlan]:
    """The plans of the cameras at ``indices``."""
    base = template(config)
    recording = recording_set(config)
    # One scenario object for every idle camera but its device: policy, rules and media shared.
    idle = replace(base, timeline=(_entry(0.0, PowerOn()),), duration_s=MAX_DURATION_S)
    plans = []
    for index in indices:
        device_id = config.device_id(index)
        seed = derive_seed(config.seed, "fleet", "camera", device_id) & _SEED_MASK
        start_s = index / config.connect_rate
        records = index in recording
        if not records:
            play = idle
        elif config.scenario_file is not None:
            play = replace(base, duration_s=MAX_DURATION_S)
        else:
            play = replace(idle, timeline=_recording(config, device_id, start_s))
        device = replace(base.device, id=device_id, seed=seed)
        plans.append(
            CameraPlan(index, device_id, seed, start_s, records, replace(play, device=device))
        )
    return plans


def _recording(config: FleetConfig, device_id: str, start_s: float) -> tuple[TimelineEntry, ...]:
    """Power on, then one recording at a random time in the recording window."""
    window = config.recording_window()
    rng = random.Random(derive_seed(config.seed, "fleet", "recording", device_id))
    length = rng.uniform(window.shortest_s, window.longest_s)
    begin = rng.uniform(window.first_s, max(window.first_s, window.last_end_s - length))
    at = round(begin - start_s, 3)
    return (
        _entry(0.0, PowerOn()),
        _entry(at, DoublePress(source="fleet")),
        _entry(round(at + length, 3), Hold(reason=STOP_REASON)),
    )


def _entry(at_s: float, action: PowerOn | DoublePress | Hold) -> TimelineEntry:
    return TimelineEntry(at_s=at_s, action=action.name, params=action, line=0)
