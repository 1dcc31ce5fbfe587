"""The `conjure` command imports only what the command it runs needs: `conjure --help`
neither Temporal nor pydantic, `conjure run` none of the other commands' modules.
Each check runs the real entry point's group in a fresh interpreter and reads its
sys.modules (no timing: the speed itself is bench/all.py --only startup)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from conjure.cli.main import LAZY_COMMANDS, cli

HEAVY = ("temporalio", "pydantic", "docker", "boto3", "rich", "starlette")


def _modules_after(*argv: str) -> set[str]:
    """The modules loaded once `conjure ARGV` has run (--help and errors exit early)."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['conjure', *{list(argv)!r}]\n"
        "from conjure.cli.main import cli\n"
        "try:\n"
        "    cli.main(standalone_mode=False)\n"
        "except BaseException:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def _loaded(modules: set[str], top: str) -> bool:
    return top in modules or any(m.startswith(top + ".") for m in modules)


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["ls", "--help"]])
def test_help_imports_no_heavy_library(argv: list[str]) -> None:
    mods = _modules_after(*argv)
    assert "conjure.cli.main" in mods  # the entry point did run
    assert [lib for lib in HEAVY if _loaded(mods, lib)] == []


def test_run_loads_only_its_own_command_module() -> None:
    mods = _modules_after("run", "--help")
    commands = {m for m in mods if m.startswith("conjure.cli.commands.")}
    assert commands == {
        "conjure.cli.commands.root",  # the root group
        "conjure.cli.commands.common",
        "conjure.cli.commands.flags",
        "conjure.cli.commands.run",
    }
    assert "conjure.worker_agent.commands" not in mods


def test_the_entry_point_imports_only_the_standard_library() -> None:
    """cli/main.py and the warm CLI's client (cli/warm.py) run before any command: they
    load neither click nor anything of the commands', so a warm command costs only the
    interpreter's start."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import conjure.cli.main\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    new = set(json.loads(proc.stdout))
    assert {m for m in new if m.startswith("conjure")} == {
        "conjure", "conjure.cli", "conjure.cli.main", "conjure.cli.warm",
    }  # fmt: skip
    assert [lib for lib in (*HEAVY, "click") if _loaded(new, lib)] == []


def test_every_command_is_in_the_lazy_table() -> None:
    """LAZY_COMMANDS names each command of each module, and nothing else."""
    ctx = click.Context(cli)
    modules = set(LAZY_COMMANDS.values())
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.name == name
    listed = {c.name for m in modules for c in __import__(m, fromlist=["COMMANDS"]).COMMANDS}
    assert listed == set(LAZY_COMMANDS)


def test_metric_aggs_match_the_workflow() -> None:
    from conjure.cli.commands.hyper import METRIC_AGGS
    from conjure.workflows.hyper_models import AGGS

    assert METRIC_AGGS == AGGS
