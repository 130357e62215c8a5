"""``bwc-sim scenario FILE --out DIR``: run a scenario in virtual time and report its evidence.

Writes the camera's data directory (identity, audit log, recordings) to DIR and prints a report of
every recording, with the policy compliance findings. A fleet scenario (a ``[fleet]`` table) runs
all its cameras on one virtual clock, each in ``DIR/<camera id>/``, and reports every camera and
what the group's peer broadcasts did. With ``--json`` the report is one JSON object on stdout.
Exit 0 when it ran (findings are printed, not failures), 1 with ``--strict`` when there is any
finding (on any camera), 2 for a bad scenario or policy file or a DIR that is not empty (the
message names the line and field).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from device.errors import ConfigError
from sim.fleet_report import build_fleet_report
from sim.fleet_run import FleetRun
from sim.report import build_report
from sim.runner import ScenarioRun
from sim.scenario import format_time, load_scenario


def register(commands: Any) -> None:
    """Add the ``scenario`` subcommand."""
    parser = commands.add_parser(
        "scenario", help="run a scenario in virtual time", description=__doc__
    )
    parser.add_argument("file", type=Path, help="the scenario TOML file (see docs/scenarios.md)")
    parser.add_argument(
        "--out", type=Path, required=True, help="data directory to create (must be empty)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if the compliance report has any finding (of any camera of a fleet)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the scenario; 0 when it ran, 1 for findings under ``--strict``, 2 for bad input."""
    console = Console(stderr=True)
    try:
        scenario = load_scenario(args.file)
        scenario_run: ScenarioRun | FleetRun = (
            ScenarioRun(scenario, args.out)
            if scenario.fleet is None
            else FleetRun(scenario, args.out)
        )
    except ConfigError as exc:
        console.print(f"bwc-sim scenario: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    started = time.perf_counter()
    with Progress(
        TextColumn("virtual time"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.json or not console.is_terminal,
    ) as progress:
        task = progress.add_task("", total=scenario.duration_s)
        scenario_run.run(
            lambda done, _total: progress.update(
                task, completed=done, description=format_time(done)
            )
        )
    wall_s = time.perf_counter() - started
    if isinstance(scenario_run, FleetRun):
        report = build_fleet_report(scenario_run)
        show = _print_fleet
    else:
        report = build_report(scenario_run)
        show = _print_human
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        show(console, report, wall_s)
    return 1 if args.strict and report["compliance"] else 0


def _print_human(console: Console, report: dict[str, Any], wall_s: float) -> None:
    totals = report["totals"]
    console.print(
        f"{report['scenario']}: device {report['device']}, {report['duration_s']:.0f} s of "
        f"virtual time in {wall_s:.2f} s ({report['duration_s'] / max(wall_s, 1e-9):,.0f}x)",
        markup=False,
        soft_wrap=True,
    )
    for item in report["recordings"]:
        console.print(
            f"  {item['id']}: {item['start_utc']} .. {item['stop_utc']}, "
            f"{item['start_trigger']} -> {item['stop_trigger']} "
            f"({item['stop_reason'] or 'no reason stated'}), "
            f"pre-roll {item['delivered_pre_roll_s']:.1f}/{item['requested_pre_roll_s']:.1f} s, "
            f"{len(item['segments'])} segments" + (" [recovered]" if item["recovered"] else ""),
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"{totals['recordings']} recordings, {totals['segments']} segments, "
        f"{totals['bytes']:,} bytes, {totals['recorded_s']:.0f} s recorded",
        markup=False,
        soft_wrap=True,
    )
    findings = report["compliance"]
    console.print(
        f"compliance with policy {report['policy']!r}: "
        + (f"{len(findings)} finding(s)" if findings else "no findings"),
        markup=False,
        soft_wrap=True,
    )
    for finding in findings:
        where = finding["recording"] or "scenario"
        console.print(
            f"  [{finding['rule']}] {where}: {finding['message']}", markup=False, soft_wrap=True
        )


def _print_fleet(console: Console, report: dict[str, Any], wall_s: float) -> None:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    fleet, totals = report["fleet"], report["totals"]
    group = f"in group {fleet['group']}" if fleet["group"] else "without a group"
    say(
        f"{report['scenario']}: {fleet['count']} cameras {group}, {report['duration_s']:.0f} s "
        f"of virtual time in {wall_s:.2f} s ({report['duration_s'] / max(wall_s, 1e-9):,.0f}x)"
    )
    for camera in report["cameras"]:
        starts = ", ".join(
            f"{item['start_trigger']} -> {item['stop_trigger']}" for item in camera["recordings"]
        )
        count = camera["totals"]["recordings"]
        say(
            f"  {camera['device']}: {count} recording{'' if count == 1 else 's'}"
            + (f" ({starts})" if starts else "")
            + f", {len(camera['compliance'])} finding(s)"
        )
    if report["group"] is not None:
        say(f"group {report['group']['name']} (range {fleet['range_m']:g} m):")
        for item in report["group"]["decisions"]:
            away = "" if item["distance_m"] is None else f", {item['distance_m']:.1f} m"
            say(
                f"  {format_time(item['at_s'])} {item['camera']} <- {item['peer']} "
                f"{item['message']}{away}: {item['act'] or 'not delivered'}: {item['decision']}"
            )
    say(
        f"{totals['recordings']} recordings, {totals['segments']} segments, "
        f"{totals['bytes']:,} bytes, {totals['recorded_s']:.0f} s recorded, "
        f"{totals['joined']} started by a peer"
    )
    say(
        f"compliance with policy {report['policy']!r}: "
        + (f"{totals['findings']} finding(s)" if totals["findings"] else "no findings")
    )
    for finding in report["compliance"]:
        where = finding["recording"] or "scenario"
        say(f"  [{finding['rule']}] {finding['camera']} {where}: {finding['message']}")
