"""The report of a fleet scenario: every camera's report, and what the group's broadcasts did.

Each camera's entry is the single-camera report (``sim.report.build_report``) of its own data
directory. The group summary joins what the fleet routed (``FleetRun.broadcasts`` and
``deliveries``: who sent what, to whom, from how far) with what each receiver decided, read back
from its audit log: so it describes the evidence, as the single-camera report does.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Final

from sim.fleet_run import Delivery, FleetRun
from sim.report import build_report

_REQUESTS: Final = {"peer_activation": "activate", "peer_deactivation": "deactivate"}
"""The audit log's ``request`` for the decision a peer message asks for."""

_Key = tuple[str, str, float]
"""(peer, request, monotonic s) of a peer decision in a receiver's audit log."""


def build_fleet_report(fleet: FleetRun) -> dict[str, Any]:
    """The JSON report of a finished fleet run. Deterministic, as the single-camera report."""
    scenario = fleet.scenario
    reports = [build_report(run) for run in fleet.runs]
    findings = [{"camera": r["device"], **f} for r in reports for f in r["compliance"]]
    group = group_summary(fleet)
    return {
        "scenario": scenario.name,
        "seed": scenario.device.seed,
        "duration_s": scenario.duration_s,
        "policy": scenario.policy_name,
        "fleet": {
            "count": len(fleet.runs),
            "group": fleet.fleet.group,
            "range_m": scenario.rules.peer.range_m,
            "cameras": [
                {
                    "id": camera.id,
                    "seed": camera.seed,
                    "position": None if camera.position is None else list(camera.position),
                }
                for camera in fleet.fleet.cameras
            ],
        },
        "cameras": reports,
        "group": group,
        "compliance": findings,
        "totals": {
            "cameras": len(reports),
            "recordings": sum(r["totals"]["recordings"] for r in reports),
            "segments": sum(r["totals"]["segments"] for r in reports),
            "bytes": sum(r["totals"]["bytes"] for r in reports),
            "recorded_s": round(sum(r["totals"]["recorded_s"] for r in reports), 3),
            "findings": len(findings),
            "broadcasts": len(fleet.broadcasts),
            "joined": 0 if group is None else len(group["joined"]),
        },
    }


def group_summary(fleet: FleetRun) -> dict[str, Any] | None:
    """Broadcasts, every member's decision on each, and the recordings a peer started.

    None when the fleet has no group. ``joined``: recordings started by a peer's broadcast
    (``camera``'s ``recording``, started by ``master``'s ``master_recording`` from
    ``distance_m`` away; None when a position was unknown).
    """
    if fleet.fleet.group is None:
        return None
    records = {
        camera: _peer_records(run.out / "audit.log")
        for camera, run in zip(fleet.ids, fleet.runs, strict=True)
    }
    decisions = [_decision(delivery, records[delivery.receiver]) for delivery in fleet.deliveries]
    joined = [
        {
            "camera": item["camera"],
            "recording": item["recording"],
            "master": item["peer"],
            "master_recording": item["peer_recording"],
            "at_s": item["at_s"],
            "distance_m": item["distance_m"],
        }
        for item in decisions
        if item["message"] == "peer_activation" and item["act"] == "start"
    ]
    return {
        "name": fleet.fleet.group,
        "broadcasts": [
            {
                "at_s": b.at_s,
                "camera": b.camera,
                "message": b.message,
                "recording": b.recording,
                "reason": b.reason,
                "position": None if b.position is None else list(b.position),
            }
            for b in fleet.broadcasts
        ],
        "joined": joined,
        "decisions": decisions,
    }


def _decision(delivery: Delivery, records: dict[_Key, deque[dict[str, Any]]]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "at_s": delivery.at_s,
        "camera": delivery.receiver,
        "peer": delivery.sender,
        "message": delivery.message,
        "peer_recording": delivery.recording,
        "distance_m": None if delivery.distance_m is None else round(delivery.distance_m, 3),
        "delivered": delivery.delivered,
        "act": None,
        "accepted": False,
        "decision": "the camera was off: not delivered",
        "recording": None,
    }
    key = (delivery.sender, _REQUESTS[delivery.message], delivery.at_s)
    if delivery.delivered and records.get(key):
        record = records[key].popleft()
        item.update(
            act=record.get("act"),
            accepted=bool(record.get("accepted")),
            decision=record.get("decision"),
            recording=record.get("recording"),
        )
    return item


def _peer_records(path: Path) -> dict[_Key, deque[dict[str, Any]]]:
    """A receiver's peer decisions, by (peer, request, time), in log order.

    Lines that do not parse are skipped (``bwc-sim verify`` judges the log's integrity).
    """
    found: dict[_Key, deque[dict[str, Any]]] = defaultdict(deque)
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("kind") != "trigger":
            continue
        if record.get("trigger") != "peer" or record.get("request") not in _REQUESTS.values():
            continue
        peer = str(record.get("source", "")).removeprefix("peer:")
        found[(peer, str(record["request"]), float(record.get("mono_s", 0.0)))].append(record)
    return found
