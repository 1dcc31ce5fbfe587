"""`conjure pipeline run|status|stop|resume`: graphs of runs from a YAML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conjure.cli.commands.common import aio, api, info, warn

if TYPE_CHECKING:
    from conjure.workflows.pipeline_models import PipelineStatus


@click.group()
def pipeline() -> None:
    """Pipelines: graphs of runs whose steps feed each other's outputs."""


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
    from conjure.cli.pipelines import load_yaml

    name, steps = load_yaml(file)
    p = await api().pipeline(steps, name=name, warn=warn)
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
    from conjure.cli.pipelines import AsyncPipeline

    st = await AsyncPipeline(api(), pipeline_id).status()
    if as_json:
        click.echo(json.dumps(st.model_dump(mode="json"), indent=2))
        return
    _print_status(st)


@pipeline.command(name="stop")
@click.argument("pipeline_id", type=int)
@aio
async def pipeline_stop(pipeline_id: int) -> None:
    """Stop pipeline PIPELINE_ID: its running steps are stopped, no new step starts."""
    from conjure.cli.pipelines import AsyncPipeline

    await AsyncPipeline(api(), pipeline_id).stop()
    info(f"stopping pipeline {pipeline_id}")


@pipeline.command(name="resume")
@click.argument("pipeline_id", type=int)
@aio
async def pipeline_resume(pipeline_id: int) -> None:
    """Rerun the steps of PIPELINE_ID that did not complete, reusing the others' outputs."""
    p, reused = await api().resume_pipeline(pipeline_id)
    kept = f"; reusing {', '.join(reused)}" if reused else ""
    info(f"💫 Resumed pipeline {pipeline_id} as pipeline #{p.id}{kept}")
    click.echo(p.id)


COMMANDS = [pipeline]
