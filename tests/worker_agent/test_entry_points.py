"""Conjure's processes have one entry point and one parser: `conjure worker`/`conjure agent`
are the same click commands as `python -m conjure.worker_agent worker|agent`, which is what
the embedded stack and local machines start and what a cloud machine's startup script runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from conjure.cli.main import cli
from conjure.infra.config import Settings
from conjure.infra.processes import process_command
from conjure.infra.providers.base import startup_script
from conjure.worker_agent import commands
from conjure.workflows.models import MachineType
from tests.conftest import conjure


def _module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conjure.worker_agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_commands_are_the_processes_commands() -> None:
    ctx = click.Context(cli)
    assert cli.get_command(ctx, "worker") is commands.worker
    assert cli.get_command(ctx, "agent") is commands.agent


def test_module_entry_point_parses_like_the_cli() -> None:
    help_ = _module("agent", "--help")
    assert help_.returncode == 0 and "--machine-id" in help_.stdout
    assert "--machine-id" in conjure("agent", "--help").out
    missing = _module("agent")
    assert missing.returncode == 2
    assert "Missing option '--machine-id'" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert conjure("agent").code == 2


def test_every_starter_uses_the_same_commands(tmp_path: Path) -> None:
    assert process_command("agent", "--machine-id", "m1")[1:] == [
        "-m",
        "conjure.worker_agent",
        "agent",
        "--machine-id",
        "m1",
    ]
    script = startup_script(
        Settings(home=tmp_path, temporal_address="10.0.0.1:7233"),
        "aws-1",
        MachineType(name="cpu", vcpus=2, memory_gb=4),
    )
    assert "/opt/conjure/bin/conjure agent --machine-id aws-1" in script
