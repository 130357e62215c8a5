"""A worker's running totals of its cameras' counters, kept up to date without reading them all.

A worker reports its cameras once a second. Reading every camera's counters (its state, its
daemon's publish counts, its upload and audit progress) cost a worker of 1,000 idle cameras about
a fifth of its CPU, while an idle camera changes them a few times per telemetry interval. So the
totals are the sum of each camera's last ``CameraSample``: a camera says when it may have moved
(``FleetCamera.watch``: its daemon's ``on_change``, its start, its crash), and a report re-reads
only those and adds the difference. Every ``FULL_EVERY`` reports, and for the final report, every
camera is read again from scratch.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from sim.fleet.camera import COUNTED, CameraSample, FleetCamera
from sim.fleet.stats import WorkerReport

FULL_EVERY: Final = 30
"""Every how many updates the totals are summed again from every camera (a safety net)."""


class CameraTotals:
    """The sum of the cameras' last samples (see the module docstring)."""

    def __init__(self) -> None:
        self.cameras: list[FleetCamera] = []
        self._moved: set[FleetCamera] = set()
        """The cameras that moved since the last update."""
        self._counts = [0] * len(COUNTED)
        self._errors: Counter[str] = Counter()
        self._updates = 0

    def add(self, camera: FleetCamera) -> None:
        """Count ``camera`` (not started yet: its sample is all zero until it says it moved)."""
        self.cameras.append(camera)
        camera.watch(self._on_move)

    def update(self, *, full: bool = False) -> None:
        """Bring the totals up to date: the cameras that moved, or every one (``full``)."""
        self._updates += 1
        if full or self._updates % FULL_EVERY == 0:
            self._recount()
            return
        moved, self._moved = self._moved, set()
        for camera in moved:
            before, camera.last = camera.last, camera.sample()
            self._apply(before, camera.last)

    def fill(self, report: WorkerReport, errors: Counter[str]) -> None:
        """Put the totals into ``report`` and add the cameras' errors to ``errors``."""
        for name, value in zip(COUNTED, self._counts, strict=True):
            setattr(report, name, value)
        errors.update(+self._errors)

    def _on_move(self, camera: FleetCamera) -> None:
        self._moved.add(camera)

    def _recount(self) -> None:
        self._moved = set()
        counts = [0] * len(COUNTED)
        errors: Counter[str] = Counter()
        for camera in self.cameras:
            camera.last = sample = camera.sample(fresh=True)
            for index, value in enumerate(sample.counts):
                counts[index] += value
            errors.update(dict(sample.errors))
        self._counts, self._errors = counts, errors

    def _apply(self, before: CameraSample, now: CameraSample) -> None:
        counts = self._counts
        for index, (old, new) in enumerate(zip(before.counts, now.counts, strict=True)):
            if old != new:
                counts[index] += new - old
        if before.errors != now.errors:
            self._errors.subtract(dict(before.errors))
            self._errors.update(dict(now.errors))
