"""The embedded stack: `conjure up` and `conjure down` (`conjure worker` and `conjure
agent` are the processes' own commands, worker_agent/commands.py)."""

from __future__ import annotations

import click

from conjure.cli.commands.common import aio, console_note, info, warn


@click.command()
@aio
async def up() -> None:
    """Start the embedded stack (Temporal dev server, control worker, local machines)."""
    from conjure.infra import stack
    from conjure.infra.config import get_settings

    s = get_settings()
    report = await stack.up(s)
    for name in report.started:
        info(f"started {name}")
    for name in report.already:
        info(f"{name} already running")
    for problem in report.problems:
        warn(problem)
    info(
        f"Conjure is up in {s.home}; Temporal at {s.address}; Temporal Web UI: {s.ui_url}"
        + console_note(report)
    )


@click.command()
def down() -> None:
    """Stop the embedded stack. Runs and machines are kept for the next `conjure up`."""
    from conjure.infra import stack
    from conjure.infra.config import get_settings

    stopped = stack.down(get_settings())
    info("stopped " + ", ".join(stopped) if stopped else "nothing was running")


COMMANDS = [up, down]
