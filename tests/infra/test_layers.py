"""The layers: infra (adapters) -> workflows -> activities -> worker_agent (processes) -> cli.
infra/ starts Conjure's processes by command line only: it imports none of the layers that
hold their code or the user interface; workflows import neither activities nor processes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "infra": ("conjure.cli", "conjure.activities", "conjure.worker_agent"),
    "workflows": ("conjure.cli", "conjure.activities", "conjure.worker_agent"),
    "activities": ("conjure.cli", "conjure.worker_agent"),
    "worker_agent": ("conjure.cli",),
}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.startswith(FORBIDDEN[package])
    ]
    assert not bad, bad
