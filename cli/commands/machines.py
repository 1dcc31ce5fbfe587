"""The machines: `conjure machine-types`, `conjure machines`, `conjure machines terminate`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click

from conjure.cli.commands.common import aio, api, fmt_cost, fmt_time, info

if TYPE_CHECKING:
    from conjure.workflows.models import Machine


@click.command(name="machine-types")
@click.option("--json", "as_json", is_flag=True)
def machine_types(as_json: bool) -> None:
    """List the machine types of the catalog."""
    cat = api().catalog
    if as_json:
        click.echo(json.dumps([m.model_dump() for m in cat.values()], indent=2))
        return
    click.echo(f"{'NAME':<9} {'vCPUs':>5} {'RAM GB':>7}  {'GPU':<14} {'$/hour':>7}")
    for m in cat.values():
        gpu = f"{m.gpus} x {m.gpu_model}" if m.gpus else "-"
        click.echo(
            f"{m.name:<9} {m.vcpus:>5g} {m.memory_gb:>7g}  {gpu:<14} {m.price_per_hour:>7.3f}"
        )


def _machine_cost(m: Machine, now: datetime) -> float:
    from conjure.workflows import cost as costs

    return costs.cost(m.price_per_hour, m.created, m.ended or now)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@aio
async def machines(ctx: click.Context, as_json: bool) -> None:
    """List the pool's machines; `conjure machines terminate ID` ends one."""
    if ctx.invoked_subcommand is not None:
        return
    c = api()
    view = await c.pool()
    now = datetime.now(timezone.utc)
    if as_json:
        rows = []
        for m in view.machines:
            row = m.model_dump(mode="json")
            row["cost"] = _machine_cost(m, now)
            rows.append(row)
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        f"{'ID':<20} {'TYPE':<8} {'PROVIDER':<8} {'STATE':<12} {'IDLE SINCE':<19} "
        f"{'RUNS':>4} {'COST':>9}"
    )
    for m in view.machines:
        click.echo(
            f"{m.id:<20} {m.machine_type:<8} {m.provider:<8} {m.state.value:<12} "
            f"{fmt_time(m.idle_since):<19} {m.runs_served:>4} {fmt_cost(_machine_cost(m, now)):>9}"
        )
    if view.queue:
        click.echo(f"{len(view.queue)} run(s) waiting for a machine")
    from conjure.cli.fleet import ssh_host_lines

    for line in ssh_host_lines(c.settings):
        click.echo(line)


@machines.command(name="terminate")
@click.argument("machine_id")
@click.option("--force", is_flag=True, help="Terminate now, interrupting its run.")
@aio
async def machines_terminate(machine_id: str, force: bool) -> None:
    """Terminate machine MACHINE_ID (after its current run, unless --force)."""
    res = await api().terminate_machine(machine_id, force=force)
    if res.after_run:
        info(f"machine {res.machine_id} will terminate after its run ({res.after_run})")
    else:
        info(f"machine {res.machine_id} is terminating")


COMMANDS = [machine_types, machines]
