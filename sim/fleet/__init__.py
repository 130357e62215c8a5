"""Fleets of connected cameras in real time: ``bwc-sim fleet`` (docs/fleet.md).

``config`` (the options, validated), ``plan`` (each camera's ID, seed, start and scenario),
``camera`` (a ``sim.live.LiveCamera`` made cheap when idle), ``worker`` (a process running its
share of the cameras on one event loop), ``runner`` (the parent: broker, receiver, workers,
totals), ``stats`` and ``table`` (counters, summary, live table), ``infra``, ``messages``,
``process`` and ``tally`` (their plumbing).
"""

from sim.fleet.config import FleetConfig
from sim.fleet.runner import FleetError, run_fleet

__all__ = ["FleetConfig", "FleetError", "run_fleet"]
