"""`conjure stop` and `conjure kill`: controlling a live run from any terminal that
reaches the Temporal server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from conjure.cli.commands.common import api, info

if TYPE_CHECKING:
    from conjure.workflows.models import RunStatus


def _report(st: RunStatus) -> None:
    reason = f" ({st.reason})" if st.reason else ""
    info(f"run {st.run_id} is {st.state.value}{reason}")


@click.command()
@click.argument("run_id", type=int)
@click.option(
    "--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
    help="Seconds between SIGTERM and SIGKILL (default: the stop_grace_seconds setting, 30).",
)  # fmt: skip
@click.option("-w", "--wait", is_flag=True, help="Wait until the run has ended, then say how.")
def stop(run_id: int, grace: float | None, wait: bool) -> None:
    """Stop run RUN_ID gracefully: SIGTERM, then SIGKILL after the grace period.

    The run still saves every file it wrote and ends Stopped. A run still waiting
    for a machine is withdrawn; one being built stops building."""

    async def go() -> None:
        from conjure.cli.runs import AsyncRun
        from conjure.workflows.models import RunState

        c = api()
        run = AsyncRun(c, run_id)
        before = await run.stop(grace)
        g = grace if grace is not None else c.settings.stop_grace_seconds
        how = (
            f"SIGTERM, then SIGKILL after {g:g}s; its files are saved"
            if before.state == RunState.RUNNING
            else f"it was {before.state.value}"
        )
        info(f"✨ Stopping run {run_id} ({how})")
        if wait:
            _report(await run.wait_final())

    asyncio.run(go())


@click.command()
@click.argument("run_id", type=int)
@click.option("-w", "--wait", is_flag=True, help="Wait until the run has ended.")
def kill(run_id: int, wait: bool) -> None:
    """Kill run RUN_ID at once (SIGKILL): nothing is saved, its machine is released."""

    async def go() -> None:
        from conjure.cli.runs import AsyncRun

        run = AsyncRun(api(), run_id)
        before = await run.kill()
        info(f"✨ Killing run {run_id} (it was {before.state.value})")
        if wait:
            _report(await run.wait_final())

    asyncio.run(go())


COMMANDS = [stop, kill]
