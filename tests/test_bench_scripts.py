"""The ``--json`` contract between the benchmark scripts and the suite (``scripts/bench.py``).

``bench_prebuffer.py`` and ``bench_shift.py`` run as the suite runs them, as child processes with
``--json``, on tiny settings (2 s of video; the two-minute bench tour instead of the 10-hour
shift) so the module takes a few seconds: stdout must be one JSON object with every repeat's
figures and the settings, and the suite's readers must turn it into table rows.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 2
MACHINE_KEYS = {"machine", "measured", "load_average_before_after"}

pytestmark = [pytest.mark.timeout(60)]


def run_json(script: str, *args: str) -> tuple[dict[str, Any], str]:
    """The script's one JSON object on stdout, and its stdout as text."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, f"scripts/{script}", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=50,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report, done.stdout


@pytest.fixture(scope="module")
def suite() -> Iterator[ModuleType]:
    """``scripts/bench.py`` as a module (``scripts`` is no package)."""
    name = "bench_suite_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "bench.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: its dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.fixture(scope="module")
def prebuffer() -> tuple[dict[str, Any], str]:
    return run_json("bench_prebuffer.py", "--seconds", "2", "--repeat", str(REPEAT))


@pytest.fixture(scope="module")
def shift(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    work = tmp_path_factory.mktemp("shift")
    args = ("--scenario", "examples/bench-tour.toml", "--dir", str(work), "--repeat", str(REPEAT))
    return run_json("bench_shift.py", *args)


def test_prebuffer_json_has_settings_machine_and_every_round(
    prebuffer: tuple[dict[str, Any], str],
) -> None:
    report, _ = prebuffer
    assert report["seconds"] == 2.0
    assert report["repeat"] == REPEAT
    assert report.keys() >= MACHINE_KEYS
    assert [row["profile"] for row in report["rows"]] == report["profiles"]
    for row in report["rows"]:
        assert row["packets"] > 0
        assert row["bytes"] > 0
        assert len(row["ratio"]) == REPEAT
        for key in ("wall_s", "mb_s", "packets_s"):
            assert set(row[key]) == {"push", "payload", "copy", "memcpy"}
            assert all(len(values) == REPEAT for values in row[key].values())
        best = row["best"]
        assert best["copy"]["vs_copy"] == 1.0
        assert best["push"]["mb_s"] == max(row["mb_s"]["push"])


def test_shift_json_has_settings_machine_and_every_round(
    shift: tuple[dict[str, Any], str],
) -> None:
    report, _ = shift
    assert report["scenario"] == "examples/bench-tour.toml"
    assert report["repeat"] == REPEAT
    assert report["virtual_s"] == 120.0
    assert report.keys() >= MACHINE_KEYS
    per_round = ("stored_bytes", "wall_s", "floor_s", "speed_up", "floor_speed_up", "ratio")
    for key in per_round:
        assert len(report[key]) == REPEAT, key
    assert len(set(report["stored_bytes"])) == 1  # a virtual-time run stores the same bytes
    assert report["best"]["wall_s"] == min(report["wall_s"])
    ratios = [f / w for w, f in zip(report["wall_s"], report["floor_s"], strict=True)]
    assert report["ratio"] == pytest.approx(ratios)


@pytest.mark.parametrize("name", ["prebuffer", "shift"])
def test_the_suite_reads_median_and_range_from_the_json(
    name: str, suite: ModuleType, request: pytest.FixtureRequest
) -> None:
    _, stdout = request.getfixturevalue(name)
    parse: Callable[[str], list[Any]] = getattr(suite, f"parse_{name}")
    rows = parse(stdout)
    assert rows
    for row in rows:
        assert f"median of {REPEAT}" in row.figure
        assert "-" in row.ratio  # the range of the rounds' ratios follows the median
