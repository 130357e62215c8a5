"""The fleet's counters: a worker's snapshot, their sum, and the summary printed at the end.

Each worker samples its cameras every second into a ``WorkerReport`` and sends it to the
parent, which adds them up for the live table (``FleetTotals``) and, from the workers' final
reports, builds the summary (``summary``; its keys are documented in docs/fleet.md).
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PAGE = resource.getpagesize()
_STATM = Path("/proc/self/statm")


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; 0 where there is none)."""
    try:
        return int(_STATM.read_text(encoding="ascii").split()[1]) * _PAGE
    except OSError:
        return 0


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class WorkerReport:
    """One worker's cameras at one moment (``final``: after the fleet stopped).

    ``cpu_s`` is the worker's CPU time since the fleet started, ``rss_bytes`` its RSS (both taken
    when the fleet's duration ended, in a final report); ``baseline_rss_bytes`` its RSS before
    any camera was made; ``idle_rss_bytes`` its RSS once every camera was connected and before
    any recording began (None until then). ``errors`` counts error kinds; ``warnings`` counts
    log records of level WARNING by logger.
    """

    worker: int
    cameras: int
    started: int = 0
    connected: int = 0
    buffering: int = 0
    recording: int = 0
    uploading: int = 0
    recordings: int = 0
    telemetry_sent: int = 0
    events_published: int = 0
    segments_verified: int = 0
    bytes_verified: int = 0
    segments_pending: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    setup_cpu_s: float = 0.0
    rss_bytes: int = 0
    baseline_rss_bytes: int = 0
    idle_rss_bytes: int | None = None
    idle_cpu_s: float | None = None
    idle_window_s: float | None = None
    elapsed_s: float = 0.0
    final: bool = False


_SUMMED = (
    "cameras",
    "started",
    "connected",
    "buffering",
    "recording",
    "uploading",
    "recordings",
    "telemetry_sent",
    "events_published",
    "segments_verified",
    "bytes_verified",
    "segments_pending",
)


@dataclass(slots=True)
class FleetTotals:
    """The sum of the workers' latest reports, for the live table."""

    counts: dict[str, int]
    errors: Counter[str]
    elapsed_s: float

    @property
    def error_count(self) -> int:
        """Every error of every kind."""
        return sum(self.errors.values())


def add_up(reports: Iterable[WorkerReport]) -> FleetTotals:
    """Sum ``reports`` (one per worker)."""
    counts = dict.fromkeys(_SUMMED, 0)
    errors: Counter[str] = Counter()
    elapsed = 0.0
    for report in reports:
        for name in _SUMMED:
            counts[name] += getattr(report, name)
        errors.update(report.errors)
        elapsed = max(elapsed, report.elapsed_s)
    return FleetTotals(counts, errors, elapsed)


def summary(
    reports: Mapping[int, WorkerReport],
    *,
    cameras: int,
    workers: int,
    duration_s: float,
    extra_errors: Mapping[str, int],
    receiver: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The run's summary (``--json``), from the workers' final reports.

    ``extra_errors`` are the parent's (a worker that died, a receiver that rejected);
    ``receiver`` the embedded receiver's own counts, None without one.
    """
    finals = [reports[w] for w in sorted(reports)]
    totals = add_up(finals)
    errors = totals.errors + Counter(extra_errors)
    warnings: Counter[str] = Counter()
    for report in finals:
        warnings.update(report.warnings)
    cpu_s = sum(r.cpu_s for r in finals)
    rss = sum(r.rss_bytes for r in finals)
    baseline = sum(r.baseline_rss_bytes for r in finals)
    idle = [r.idle_rss_bytes - r.baseline_rss_bytes for r in finals if r.idle_rss_bytes]
    counts = totals.counts
    result: dict[str, Any] = {
        "cameras": cameras,
        "workers": workers,
        "duration_s": round(duration_s, 3),
        "connected": counts["connected"],
        "telemetry_sent": counts["telemetry_sent"],
        "events_published": counts["events_published"],
        "recordings": counts["recordings"],
        "segments_verified": counts["segments_verified"],
        "bytes_verified": counts["bytes_verified"],
        "segments_pending": counts["segments_pending"],
        "errors": sum(errors.values()),
        "error_kinds": dict(sorted(errors.items())),
        "warnings": sum(warnings.values()),
        "warning_kinds": dict(sorted(warnings.items())),
        "cpu_s": round(cpu_s, 3),
        "cpu_per_core_percent": round(100.0 * cpu_s / duration_s, 2) if duration_s else 0.0,
        "cpu_per_camera_percent": round(100.0 * cpu_s / duration_s / cameras, 5)
        if duration_s
        else 0.0,
        "setup_cpu_s": round(sum(r.setup_cpu_s for r in finals), 3),
        "rss_bytes": rss,
        "baseline_rss_bytes": baseline,
        "rss_per_camera_bytes": (rss - baseline) // cameras,
        "idle_rss_per_camera_bytes": sum(idle) // cameras if len(idle) == len(finals) else None,
        "idle_cpu_per_core_percent": _idle_cpu_percent(finals),
    }
    if receiver is not None:
        result["receiver"] = dict(receiver)
    return result


def _idle_cpu_percent(finals: list[WorkerReport]) -> float | None:
    """CPU (percent of one core) of every worker while all cameras were connected and idle."""
    rates = [
        r.idle_cpu_s / r.idle_window_s
        for r in finals
        if r.idle_cpu_s is not None and r.idle_window_s
    ]
    return round(100.0 * sum(rates), 2) if rates and len(rates) == len(finals) else None
