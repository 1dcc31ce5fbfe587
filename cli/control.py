"""`conjure stop`, `conjure kill` and `conjure metrics`: controlling and watching a
live run from any terminal that reaches the Temporal server."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from datetime import datetime, timezone

import click

from conjure.cli.api import AsyncConjure, AsyncRun
from conjure.infra.config import get_settings
from conjure.infra.metrics import Point
from conjure.workflows.models import RunState, RunStatus

SPARKS = "▁▂▃▄▅▆▇█"


def _info(msg: str) -> None:
    click.echo(msg, err=True)


async def _wait_final(run: AsyncRun) -> RunStatus:
    while True:
        st = await run.status()
        if st.state.final:
            return st
        await asyncio.sleep(0.3)


def _report(st: RunStatus) -> None:
    reason = f" ({st.reason})" if st.reason else ""
    _info(f"run {st.run_id} is {st.state.value}{reason}")


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
        run = AsyncRun(AsyncConjure(get_settings()), run_id)
        before = await run.stop(grace)
        g = grace if grace is not None else get_settings().stop_grace_seconds
        how = (
            f"SIGTERM, then SIGKILL after {g:g}s; its files are saved"
            if before.state == RunState.RUNNING
            else f"it was {before.state.value}"
        )
        _info(f"✨ Stopping run {run_id} ({how})")
        if wait:
            _report(await _wait_final(run))

    asyncio.run(go())


@click.command()
@click.argument("run_id", type=int)
@click.option("-w", "--wait", is_flag=True, help="Wait until the run has ended.")
def kill(run_id: int, wait: bool) -> None:
    """Kill run RUN_ID at once (SIGKILL): nothing is saved, its machine is released."""

    async def go() -> None:
        run = AsyncRun(AsyncConjure(get_settings()), run_id)
        before = await run.kill()
        _info(f"✨ Killing run {run_id} (it was {before.state.value})")
        if wait:
            _report(await _wait_final(run))

    asyncio.run(go())


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

    async def load() -> dict[str, list[Point]]:
        run = AsyncRun(AsyncConjure(get_settings()), run_id)
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
        _info(f"run {run_id} has logged no metrics yet")
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


COMMANDS = [stop, kill, metrics]
