"""`conjure rerun` and `conjure pipeline …`: parse, call the Python API, print."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from conjure.cli.api import AsyncConjure, AsyncRun
from conjure.cli.pipelines import AsyncPipeline, load_yaml, resume_pipeline, run_pipeline
from conjure.infra.config import get_settings
from conjure.workflows.pipeline_models import PipelineStatus

# cli.main imports this module at its end; its helpers are imported where they are used.


def aio(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def info(msg: str) -> None:
    click.echo(msg, err=True)


def _api() -> AsyncConjure:
    return AsyncConjure(get_settings())


@click.command()
@click.argument("run_id", type=int)
@click.argument("command", nargs=-1)
@click.option("-t", "--machine-type", help="Another machine type.")
@click.option(
    "-m", "--mount", "mounts", multiple=True, metavar="SRC[:DEST]",
    help="Mounts instead of the run's (repeatable).",
)  # fmt: skip
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help="Set a variable.")
@click.option("-b", "--background", is_flag=True, help="Print the run id and return at once.")
@click.option("--github-url", metavar="URL", help="Take the code from this git repository.")
@click.option("--github-ref", metavar="REF", help="Branch, tag or commit of --github-url.")
@click.option("--commit-ref", metavar="REF", help="Take the code from this local commit.")
@aio
async def rerun(
    run_id: int,
    command: tuple[str, ...],
    machine_type: str | None,
    mounts: tuple[str, ...],
    env: tuple[str, ...],
    background: bool,
    github_url: str | None,
    github_ref: str | None,
    commit_ref: str | None,
) -> None:
    """Start a new run with RUN_ID's spec; COMMAND and the flags override it.

    SECRET* variables are not carried over: give them again with --env. Quote
    COMMAND, or put it after `--` when it has options of its own."""
    from conjure.cli.main import _follow_or_detach, _parse_env

    c = _api()
    if machine_type:
        c.machine_type(machine_type)
    handle = await c.rerun(
        run_id,
        " ".join(command) or None,
        machine_type=machine_type,
        mounts=list(mounts) if mounts else None,
        env=_parse_env(env),
        github_url=github_url,
        github_ref=github_ref,
        commit_ref=commit_ref,
        warn=lambda w: info(f"⚠️  {w}"),
    )
    info(f"🔁 Rerun of run {run_id}")
    await _follow_or_detach(c, handle, background)


@click.group()
def pipeline() -> None:
    """Pipelines: graphs of runs whose steps feed each other's outputs."""


def _status_json(st: PipelineStatus) -> dict:
    return st.model_dump(mode="json")


def _print_status(st: PipelineStatus) -> None:
    name = f" ({st.name})" if st.name else ""
    reason = f": {st.reason}" if st.reason else ""
    click.echo(f"Pipeline {st.pipeline_id}{name}: {st.state.value}{reason}")
    if st.resumed_from is not None:
        click.echo(f"  resumed from pipeline {st.resumed_from}")
    click.echo(f"  {'STEP':<16} {'RUN':>5}  {'STATE':<9} DETAIL")
    for s in st.steps:
        run = str(s.run_id) if s.run_id is not None else "-"
        detail = "reused from an earlier attempt" if s.reused else s.reason
        if s.run_state and s.run_state != s.state.value and not detail:
            detail = f"run {s.run_state}"
        click.echo(f"  {s.name:<16} {run:>5}  {s.state.value:<9} {detail}")


@pipeline.command(name="run")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-w", "--wait", "wait", is_flag=True, help="Wait for the pipeline to end.")
@aio
async def pipeline_run(file: Path, wait: bool) -> None:
    """Start the pipeline defined in FILE (YAML); prints its id."""
    name, steps = load_yaml(file)
    c = _api()
    p = await run_pipeline(c, steps, name=name, warn=lambda w: info(f"⚠️  {w}"))
    info(
        f"💫 Started pipeline #{p.id} ({len(steps)} steps); follow it with `conjure pipeline status {p.id}`"
    )
    click.echo(p.id)
    if wait:
        st = await p.wait()
        _print_status(st)
        raise SystemExit(0 if st.state.value == "Complete" else 1)


@pipeline.command(name="status")
@click.argument("pipeline_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@aio
async def pipeline_status(pipeline_id: int, as_json: bool) -> None:
    """Show each step of pipeline PIPELINE_ID: its run and state."""
    st = await AsyncPipeline(_api(), pipeline_id).status()
    if as_json:
        click.echo(json.dumps(_status_json(st), indent=2))
        return
    _print_status(st)


@pipeline.command(name="stop")
@click.argument("pipeline_id", type=int)
@aio
async def pipeline_stop(pipeline_id: int) -> None:
    """Stop pipeline PIPELINE_ID: its running steps are stopped, no new step starts."""
    await AsyncPipeline(_api(), pipeline_id).stop()
    info(f"stopping pipeline {pipeline_id}")


@pipeline.command(name="resume")
@click.argument("pipeline_id", type=int)
@aio
async def pipeline_resume(pipeline_id: int) -> None:
    """Rerun the steps of PIPELINE_ID that did not complete, reusing the others' outputs."""
    p, reused = await resume_pipeline(_api(), pipeline_id)
    kept = f"; reusing {', '.join(reused)}" if reused else ""
    info(f"💫 Resumed pipeline {pipeline_id} as pipeline #{p.id}{kept}")
    click.echo(p.id)


__all__ = ["AsyncRun", "pipeline", "rerun"]
