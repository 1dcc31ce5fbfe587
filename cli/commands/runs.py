"""Looking at runs: `conjure ls`, `conjure status`, `conjure logs`, `conjure diff`,
`conjure metrics`."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import click

from conjure.cli.commands.common import (
    aio,
    api,
    emit_log,
    fmt_cost,
    fmt_duration,
    fmt_time,
    info,
    until_interrupted,
)

if TYPE_CHECKING:
    from conjure.cli.listing import RunSummary
    from conjure.infra.metrics import Point
    from conjure.workflows.models import RunStatus

SPARKS = "▁▂▃▄▅▆▇█"


def _summary_json(r: RunSummary) -> dict[str, Any]:
    return {
        "id": r.run_id,
        "state": r.state,
        "exit_code": r.exit_code,
        "machine_type": r.machine_type,
        "command": r.command,
        "created": r.created.isoformat() if r.created else None,
        "ended": r.ended.isoformat() if r.ended else None,
        "duration": r.duration,
        "pipeline": r.pipeline_id,
        "queue_position": r.queue_position,
        "queue_position_unknown": r.queue_unknown,
        "cost": r.cost,
    }


def _fmt_state(state: str, queue_position: int | str | None) -> str:
    return f"{state} #{queue_position}" if queue_position else state


@click.command(name="ls")
@click.argument("path", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", default=50, show_default=True, help="How many runs.")
@click.option(
    "--state",
    default=None,
    metavar="STATE",
    help="Only runs in STATE (Running, Stopped, Terminated, …).",
)
@aio
async def ls_cmd(path: str, as_json: bool, limit: int, state: str | None) -> None:
    """List runs, or the resources under PATH (/, runs/N, uploads/…, public/…)."""
    from conjure.cli.checks import check_value
    from conjure.cli.listing import RunFilter

    check_value("state", state)
    RunFilter(state=state or "").query()  # an unknown state: exit 2 before anything starts
    c = api()
    if path:
        entries = c.ls(path)
        if as_json:
            click.echo(
                json.dumps(
                    [{"path": e.key, "size": e.size, "dir": e.is_dir} for e in entries], indent=2
                )
            )
            return
        for e in entries:
            click.echo(f"{e.key}/" if e.is_dir else f"{e.size:>12}  {e.key}")
        return
    runs = await c.list_runs(limit=limit, state=state or "")
    if as_json:
        click.echo(json.dumps([_summary_json(r) for r in runs], indent=2))
        return
    click.echo(
        f"{'ID':>5}  {'STATE':<14}  {'TYPE':<8}  {'CREATED':<19}  {'DURATION':>9}  {'COST':>8}  COMMAND"
    )
    now = datetime.now(timezone.utc)
    for r in runs:
        dur = r.duration if r.ended else ((now - r.created).total_seconds() if r.created else None)
        cmd = r.command if len(r.command) <= 50 else r.command[:47] + "..."
        if r.pipeline_id is not None:
            cmd += f"  (pipeline {r.pipeline_id})"
        click.echo(
            f"{r.run_id:>5}  {_fmt_state(r.state_text, '?' if r.queue_unknown else r.queue_position):<14}  {r.machine_type:<8}  "
            f"{fmt_time(r.created):<19}  {fmt_duration(dur):>9}  {fmt_cost(r.cost):>8}  {cmd}"
        )


def _run_cost(st: RunStatus) -> float | None:
    from conjure.workflows import cost as costs

    if st.leased_at is None:
        return None
    end = st.released_at or datetime.now(timezone.utc)
    # earlier attempts of a resumed run (the current one is in attempts once it ended)
    earlier = sum(a.cost for a in st.attempts if a.started != st.leased_at)
    return earlier + costs.cost(st.spec.machine_type.price_per_hour, st.leased_at, end)


def _status_json(st: RunStatus, queue_position: int | None = None) -> dict[str, Any]:
    data = st.model_dump(mode="json")
    data["queue_position"] = queue_position
    data["cost"] = _run_cost(st)
    data["created"] = st.created.isoformat() if st.created else None
    data["ended"] = st.ended.isoformat() if st.ended else None
    data["total_seconds"] = (
        (st.ended - st.created).total_seconds() if st.ended and st.created else None
    )
    return data


@click.command()
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@aio
async def status(run_id: int, as_json: bool) -> None:
    """Show run RUN_ID: its state timeline, machine, exit code and image."""
    from conjure.cli.runs import AsyncRun
    from conjure.workflows.models import RunState

    c = api()
    st = await AsyncRun(c, run_id).status()
    position = None
    if st.stale:  # no worker answered: the pool would not either
        click.echo(f"conjure: {st.stale}", err=True)
    elif st.state == RunState.REQUESTED:
        position = (await c.queue_positions()).get(AsyncRun(c, run_id).workflow_id)
    if as_json:
        click.echo(json.dumps(_status_json(st, position), indent=2))
        return
    stale = " [as last recorded; possibly stale]" if st.stale else ""
    click.echo(
        f"Run {st.run_id}: {st.state.value}" + (f" ({st.reason})" if st.reason else "") + stale
    )
    click.echo(f"  command:      {st.spec.command}")
    click.echo(f"  machine type: {st.spec.machine_type.name}")
    if st.spec.pipeline_id is not None:
        click.echo(f"  pipeline:     {st.spec.pipeline_id} (step {st.spec.pipeline_step})")
    if st.spec.hyper_id is not None:
        click.echo(f"  hyper search: {st.spec.hyper_id}")
    if st.spec.code.github_url:
        ref = f" @ {st.spec.code.ref}" if st.spec.code.ref else ""
        click.echo(f"  code:         {st.spec.code.github_url}{ref} ({st.spec.code.commit})")
    elif st.spec.code.commit:
        click.echo(f"  code:         commit {st.spec.code.commit}")
    if st.spec.code.commit:
        changes = (
            f"yes (`conjure diff {st.run_id}`, or `conjure cp {st.spec.code.patch_key}`)"
            if st.spec.code.patch_key
            else "none"
        )
        click.echo(f"  uncommitted:  {changes}")
    for name, value in st.spec.env.items():
        click.echo(f"  env:          {name}={value}")
    if position:
        ahead = position - 1
        click.echo(
            f"  queue:        #{position} ({ahead} run(s) ahead, waiting for max_concurrent_runs or max_machines)"
        )
    run_cost = _run_cost(st)
    if run_cost is not None:
        price = st.spec.machine_type.price_per_hour
        click.echo(f"  cost:         {fmt_cost(run_cost)} (${price:g}/hour on the machine)")
    if st.machine_id:
        how = "reused idle machine" if st.reused_machine else "new machine"
        click.echo(f"  machine:      {st.machine_id} ({how})")
    if st.image:
        how = st.image_source or ("cached" if st.image_cached else "")
        pushed = ", pushed" if st.image_pushed else ""
        click.echo(f"  image:        {st.image}" + (f" ({how}{pushed})" if how else ""))
    if st.exit_code is not None:
        click.echo(f"  exit code:    {st.exit_code}")
    if st.spec.auto_resume > 1:
        fallback = (
            f"; on demand after {st.spec.spot_fallback} interruption(s)"
            if st.spec.spot_fallback
            else ""
        )
        click.echo(f"  auto-resume:  up to {st.spec.auto_resume} attempts{fallback}")
    for a in st.attempts:
        spot = ", spot" if a.spot else ""
        click.echo(
            f"  attempt {a.attempt}:    {a.machine_id} ({a.machine_type}{spot}) "
            f"{fmt_time(a.started)} - {fmt_time(a.ended)} {fmt_cost(a.cost)}: {a.state}"
            + (f" ({a.reason})" if a.reason else "")
        )
    for cond in st.stop_conditions:
        click.echo(f"  stop when:    {cond}")
    if st.stopped_by:
        click.echo(f"  stopped by:   {st.stopped_by}")
    if st.state.final:
        click.echo(
            f"  outputs:      {st.outputs} file(s), {st.output_bytes} bytes in runs/{st.run_id}/"
        )
    if st.created:
        end = st.ended or datetime.now(timezone.utc)
        click.echo(f"  total time:   {fmt_duration((end - st.created).total_seconds())}")
    click.echo("  timeline:")
    for ch in st.timeline:
        detail = f"  {ch.detail}" if ch.detail else ""
        click.echo(f"    {fmt_time(ch.at)}  {ch.state.value}{detail}")
    if st.log_tail:
        click.echo("  log (last lines):")
        for line in st.log_tail:
            click.echo(f"    {line}")


@click.command()
@click.argument("run_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Follow a live run until it ends.")
@aio
async def logs(run_id: int, follow: bool) -> None:
    """Print the log of run RUN_ID."""
    from conjure.cli.runs import AsyncRun

    run = AsyncRun(api(), run_id)

    async def show() -> None:
        async for line in run.logs(follow=follow):
            emit_log(line)

    await until_interrupted(show())


@click.command()
@click.argument("run_id", type=int)
@aio
async def diff(run_id: int) -> None:
    """Print the uncommitted changes run RUN_ID was submitted with, as a patch
    (`git apply` takes it): `conjure diff 12 > changes.patch`."""
    from conjure.cli.runs import AsyncRun

    patch = await AsyncRun(api(), run_id).diff()
    if patch is None:
        click.echo(f"run {run_id} had no uncommitted changes", err=True)
        return
    sys.stdout.buffer.write(patch)
    sys.stdout.flush()


def sparkline(values: list[float], width: int = 40) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return ""
    if len(vals) > width:  # the mean of each of `width` buckets
        step = len(vals) / width
        vals = [
            sum(b) / len(b)
            for i in range(width)
            if (b := vals[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)])
        ]
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARKS[len(SPARKS) // 2] * len(vals)
    return "".join(
        SPARKS[min(int((v - lo) / (hi - lo) * len(SPARKS)), len(SPARKS) - 1)] for v in vals
    )


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _point_json(p: Point) -> dict[str, object]:
    value: object = p.value if math.isfinite(p.value) else str(p.value)
    return {
        "index": p.index,
        "step": p.step,
        "value": value,
        "time": datetime.fromtimestamp(p.t / 1e9, timezone.utc).isoformat(),
    }


@click.command()
@click.argument("run_id", type=int)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def metrics(run_id: int, name: str | None, as_json: bool) -> None:
    """Print the metrics of run RUN_ID: a summary of each, or every value of NAME.

    Runs log metrics with `from conjure_metrics import send_metric` or by appending
    lines to $CONJURE_METRICS_FILE; the agent adds hardware/cpu_percent,
    hardware/memory_mb (and hardware/gpu_* where nvidia-smi exists)."""

    from conjure.cli.runs import AsyncRun

    async def load() -> dict[str, list[Point]]:
        run = AsyncRun(api(), run_id)
        await run.status()  # an unknown run: a clear error
        return run.metric_series()

    data = asyncio.run(load())
    if name is not None:
        if name not in data:
            known = ", ".join(data) or "none yet"
            raise click.ClickException(f"run {run_id} has no metric {name!r} (it has: {known})")
        data = {name: data[name]}
    if as_json:
        click.echo(
            json.dumps({n: [_point_json(p) for p in pts] for n, pts in data.items()}, indent=2)
        )
        return
    tty = sys.stdout.isatty()
    if name is not None:
        pts = data[name]
        click.echo(f"{'#':>6}  {'STEP':>6}  {'TIME (UTC)':<19}  VALUE")
        for p in pts:
            when = datetime.fromtimestamp(p.t / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            step = "-" if p.step is None else str(p.step)
            click.echo(f"{p.index:>6}  {step:>6}  {when:<19}  {_fmt(p.value)}")
        if tty:
            click.echo(sparkline([p.value for p in pts], width=60))
        return
    if not data:
        info(f"run {run_id} has logged no metrics yet")
        return
    width = max(len(n) for n in data)
    click.echo(
        f"{'NAME':<{width}}  {'COUNT':>6}  {'LAST':>10}  {'MIN':>10}  {'MAX':>10}"
        + ("  TREND" if tty else "")
    )
    for n, pts in data.items():
        vals = [p.value for p in pts]
        finite = [v for v in vals if math.isfinite(v)] or [math.nan]
        line = (
            f"{n:<{width}}  {len(pts):>6}  {_fmt(vals[-1]):>10}  {_fmt(min(finite)):>10}  "
            f"{_fmt(max(finite)):>10}"
        )
        if tty:
            line += "  " + sparkline(vals)
        click.echo(line)


COMMANDS = [ls_cmd, status, logs, diff, metrics]
