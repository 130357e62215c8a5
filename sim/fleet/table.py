"""The fleet's live table (rich, on stderr) and its human summary.

Columns (docs/fleet.md): time, cameras started of all, connected, buffering, recording (post-event
included), uploading (cameras with segments not yet verified), recordings started, segments and
megabytes verified by the receiver, telemetry messages sent, errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sim.fleet.stats import FleetTotals

_COLUMNS = (
    "time",
    "started",
    "connected",
    "buffering",
    "recording",
    "uploading",
    "recordings",
    "verified",
    "MB verified",
    "telemetry",
    "errors",
)


def render(totals: FleetTotals, duration_s: float) -> Table:
    """One row: the fleet now."""
    table = Table(title="bwc-sim fleet", title_justify="left")
    for name in _COLUMNS:
        table.add_column(name, justify="right")
    counts = totals.counts
    errors = totals.error_count
    table.add_row(
        f"{min(totals.elapsed_s, duration_s):.0f}/{duration_s:.0f} s",
        f"{counts['started']}/{counts['cameras']}",
        str(counts["connected"]),
        str(counts["buffering"]),
        str(counts["recording"]),
        str(counts["uploading"]),
        str(counts["recordings"]),
        str(counts["segments_verified"]),
        f"{counts['bytes_verified'] / 1e6:.1f}",
        str(counts["telemetry_sent"]),
        f"[red]{errors}[/red]" if errors else "0",
    )
    return table


class LiveTable:
    """Refreshes the table in place while the fleet runs (``update`` about twice a second)."""

    def __init__(self, live: Live | None) -> None:
        self._live = live

    def update(self, totals: FleetTotals, duration_s: float) -> None:
        """Show ``totals``."""
        if self._live is not None:
            self._live.update(render(totals, duration_s), refresh=True)


@contextmanager
def live_table(console: Console, *, quiet: bool) -> Iterator[LiveTable]:
    """A ``LiveTable`` on ``console`` for the block (one that shows nothing when ``quiet``)."""
    if quiet:
        yield LiveTable(None)
        return
    with Live(console=console, auto_refresh=False, transient=False) as live:
        yield LiveTable(live)


def print_summary(console: Console, result: Mapping[str, Any]) -> None:
    """The summary, for people (on stderr; ``--json`` prints the object instead)."""
    idle = result.get("idle_rss_per_camera_bytes")
    rss = (
        f"RSS: {result['rss_bytes'] / 2**20:,.1f} MiB, "
        f"{result['rss_per_camera_bytes'] / 1024:.1f} KiB per camera"
    )
    if idle is not None:
        rss += f", {idle / 1024:.1f} KiB per idle camera"
    lines = [
        (
            f"{result['connected']}/{result['cameras']} cameras connected at the end, "
            f"{result['workers']} worker(s), {result['duration_s']:g} s"
        ),
        (
            f"telemetry sent: {result['telemetry_sent']:,}; recordings: {result['recordings']}; "
            f"segments verified: {result['segments_verified']} "
            f"({result['bytes_verified'] / 1e6:,.1f} MB), pending: {result['segments_pending']}"
        ),
        f"CPU: {result['cpu_s']:.1f} s = {result['cpu_per_core_percent']:.1f} % of one core; {rss}",
        f"errors: {result['errors']}",
    ]
    lines += [f"  {kind}: {count}" for kind, count in result["error_kinds"].items()]
    lines += [f"  {failure}" for failure in result.get("failures", [])]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
