"""The `conjure` package as a whole: no import circles, no arrow that runs back up the
layers, a Python API without click, and `from conjure import ...` inside a project that
has packages of the same names as Conjure's folders.

The import graph is read with `ast` from every module's source: every import counts,
those at module level and those inside functions (a lazy import still ties two modules).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top: a layer may import those below it, never those above.
LAYERS = ["infra", "workflows", "activities", "worker_agent", "cli"]
KNOWN_CIRCLES: list[set[str]] = []
# infra may import workflows (the durable contract's models) for now.
ALLOWED_UP = {("infra", "workflows")}
# The command line's modules: the only ones that may import click.
COMMAND_MODULES = ("conjure.cli.main", "conjure.cli.commands", "conjure.worker_agent.commands")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["conjure", *parts])


def _modules() -> dict[str, Path]:
    mods = {"conjure": ROOT / "__init__.py"}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            mods[_module_name(path)] = path
    return mods


MODULES = _modules()


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations only)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    """Every module name this file imports at run time (absolute imports; the package
    uses no others)."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module:
                out.add(node.module)
                out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def test_the_graph_sees_every_layer() -> None:
    assert {m.split(".")[1] for m in MODULES if m != "conjure"} == set(LAYERS)
    assert "conjure.cli.facade" in _graph()["conjure.cli.sync"]


def test_no_import_circles() -> None:
    graph = _graph()
    done: set[str] = set()
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            cycles.append(path[path.index(m) :] + [m])
            return
        if m in done:
            return
        for t in sorted(graph[m]):
            visit(t, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
    cycles = [c for c in cycles if set(c) not in KNOWN_CIRCLES]
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_arrow_runs_up() -> None:
    up = []
    for m, path in MODULES.items():
        src = _layer(m)
        for t in _imports(path):
            dst = _layer(t) if t.startswith("conjure.") else None
            if src is None or dst is None or LAYERS.index(dst) <= LAYERS.index(src):
                continue
            if (src, dst) in ALLOWED_UP:
                continue
            up.append(f"{m} -> {t}")
    assert up == [], "\n".join(sorted(up))


def test_the_python_api_imports_no_click() -> None:
    offenders = [
        m
        for m, path in MODULES.items()
        if not m.startswith(COMMAND_MODULES)
        and any(t == "click" or t.startswith("click.") for t in _imports(path))
    ]
    assert offenders == []


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_module_imports_in_a_fresh_interpreter(tmp_path: Path) -> None:
    names = sorted(m for m in MODULES if not m.endswith(".__main__"))  # those run a program
    proc = _python(
        f"""
        import importlib
        for name in {names!r}:
            importlib.import_module(name)
        print("imported", len({names!r}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"imported {len(names)}" in proc.stdout


@pytest.mark.parametrize(
    "first", ["conjure.cli.pipelines", "conjure.cli.runs", "conjure.cli.specs"]
)
def test_api_modules_import_first(tmp_path: Path, first: str) -> None:
    """A module that once sat in an import circle imports on its own."""
    proc = _python(f"import {first}", tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_api_inside_a_project_with_packages_named_like_conjures(tmp_path: Path) -> None:
    for name in ("workflows", "cli", "infra", "activities", "worker_agent"):
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(f"WHOSE = 'user'\nNAME = {name!r}\n")
        (pkg / "models.py").write_text("class RunSpec: ...\n")
    proc = _python(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from conjure import AsyncConjure, Conjure, ConjureError, RunState, Step
        import workflows, cli, infra
        assert workflows.WHOSE == cli.WHOSE == infra.WHOSE == "user", "shadowed"
        assert RunState.COMPLETE.value == "Complete"
        c = Conjure(autostart=False)
        assert isinstance(c.aio, AsyncConjure)
        c.close()
        assert issubclass(ConjureError, Exception) and Step("a", "true").command == "true"
        assert "click" not in sys.modules, "the Python API imported click"
        print("ok")
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
