"""The layers import one way: protocol <- device <- sim.

Walks every module's imports with ``ast`` (including imports inside functions), so a lazy import
cannot sneak a dependency past the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "protocol": {
        "device",
        "sim",
        "asyncio",
        "aiomqtt",
        "serial",
        "serial_asyncio_fast",
        "socket",
        "selectors",
        "threading",
        "time",
        "random",
        "numpy",
        "rich",
    },
    "device": {"sim"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_layer(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    offenders = {
        str(module.relative_to(ROOT)): sorted(_imported_roots(module) & FORBIDDEN[package])
        for module in modules
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_walker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import asyncio\n    from sim.x import y\n")
    assert _imported_roots(module) >= {"asyncio", "sim"}
