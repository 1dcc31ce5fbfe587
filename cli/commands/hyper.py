"""`conjure hyper grid|random|bayes|status|stop`: parse, call the Python API
(cli/hyper.py), print a table of the runs, best first."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from conjure.cli.commands.common import (
    aio,
    api,
    fmt_time,
    info,
    say_started,
    until_interrupted,
    warn,
)
from conjure.cli.commands.flags import FLAGS, run_flags, run_kwargs

if TYPE_CHECKING:
    from conjure.cli.hyper import AsyncHyper
    from conjure.workflows.hyper_models import HyperStatus

# workflows/hyper_models.py's AGGS, spelled out so that `conjure --help` imports neither
# pydantic nor Temporal (tests/cli/test_cli_imports.py keeps the two equal).
METRIC_AGGS = ("max", "min", "last", "avg")

# --- the table ---------------------------------------------------------------------------


def table_rows(st: HyperStatus) -> list[list[str]]:
    """Header, then one row per run, best first."""
    names = [p.name for p in st.params]
    metric = f"{st.metric} ({st.metric_agg})" if st.metric else ""
    rows = [["RUN", "STATE", *names] + ([metric] if metric else [])]
    for r in st.ranked():
        value = "-" if r.value is None else f"{r.value:.6g}"
        row = [str(r.run_id) if r.run_id is not None else "-", r.state]
        row += [r.params.get(n, "") for n in names]
        rows.append(row + ([value] if metric else []))
    return rows


def format_table(st: HyperStatus) -> str:
    rows = table_rows(st)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    return "\n".join(lines)


def headline(st: HyperStatus) -> str:
    from conjure.cli.hyper import run_state_final

    done = sum(1 for r in st.runs if run_state_final(r.state))
    reason = f" ({st.reason})" if st.reason else ""
    return (
        f"Hyperparameter search {st.hyper_id} ({st.kind}): {st.state.value}, "
        f"{done}/{st.planned} runs ended{reason}"
    )


def print_status(st: HyperStatus) -> None:
    click.echo(headline(st))
    click.echo(f"  command: {st.command}")
    if st.metric:
        best = "lowest" if st.goal == "min" else "highest"
        click.echo(f"  metric:  {st.metric}, {st.metric_agg} of each run; best is {best}")
    click.echo(format_table(st))


async def follow(h: AsyncHyper) -> HyperStatus:
    """Until the search ends: a live table on a terminal; elsewhere one line per run
    whose state changes. Then the final table."""
    from conjure.workflows.hyper_models import HyperState

    if sys.stdout.isatty():
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(console=Console(), auto_refresh=False) as live:
            while True:
                st = await h.status()
                live.update(Text(headline(st) + "\n" + format_table(st)), refresh=True)
                if st.state != HyperState.RUNNING:
                    return await h.wait()
                await asyncio.sleep(1.0)
    seen: dict[int, str] = {}
    while True:
        st = await h.status()
        for r in st.runs:
            if r.run_id is not None and seen.get(r.index) != r.state:
                seen[r.index] = r.state
                values = ", ".join(f"{k}={v}" for k, v in r.params.items())
                info(f"✨ run {r.run_id} ({values}): {r.state}")
        if st.state != HyperState.RUNNING:
            final = await h.wait()
            print_status(final)
            return final
        await asyncio.sleep(1.0)


# --- commands ------------------------------------------------------------------------------


def search_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The search's own flags plus the run flags every run of it gets."""
    opts: list[Callable[[Any], Any]] = [
        click.argument("command", nargs=-1, required=True),
        click.option("-p", "--param", "params", multiple=True, required=True,
                     metavar="NAME=VALUES",
                     help="NAME=v1,v2,... or NAME=MIN:MAX[:linear|log|reverse_log[:float|int]]; "
                     "the command names it as :NAME:. Repeatable."),
        click.option("--metric", default="", metavar="NAME",
                     help="The metric that ranks the runs (as the runs log it)."),
        click.option("--metric-agg", default="last", show_default=True,
                     type=click.Choice(METRIC_AGGS), help="How a run's values make its one value."),
        click.option("--goal", type=click.Choice(["max", "min"]),
                     help="Which end of the metric is best (default: min for --metric-agg "
                     "min, else max)."),
        click.option("--parallel", type=click.IntRange(min=0), default=None,
                     help="Runs at once (default: the pool's max_concurrent_runs; 0: no limit)."),
        click.option("-b", "--background", is_flag=True,
                     help="Print the search's id and return at once."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return run_flags(*SEARCH_RUN_FLAGS, help=SEARCH_RUN_HELP)(fn)


# Every run of a search gets the flags of `conjure run` (the search has its own -b).
SEARCH_RUN_FLAGS = tuple(n for n in FLAGS if n not in ("background", "force"))
SEARCH_RUN_HELP = {
    "machine_type": "Machine type of every run.",
    "mounts": "Mount a resource in every run.",
    "env": "Set a variable in every run.",
    "stop_conditions": "Stop a run early (as `conjure run`).",
}


async def _start(kind: str, command: tuple[str, ...], num_runs: int, seed: int | None,
                 **kw: Any) -> None:  # fmt: skip
    from conjure.cli.hyper import start_hyper
    from conjure.workflows.hyper_models import HyperState

    c = api()
    background = kw.pop("background")
    search = {k: kw[k] for k in ("metric", "metric_agg", "goal", "parallel")}
    run_args = run_kwargs(kw)
    c.machine_type(run_args.get("machine_type"))  # unknown type: exit 2 before anything starts
    h = await start_hyper(
        c, kind, " ".join(command), list(kw["params"]), num_runs=num_runs, seed=seed,
        warn=warn, **search, **run_args,
    )  # fmt: skip
    say_started(c)
    st = await h.status(live=False)
    info(f"💫 Hyperparameter search #{h.id}: {st.planned} runs ({kind})")
    if background:
        click.echo(h.id)
        return
    info(f"✨ Stop following with ^C (the search goes on; `conjure hyper status {h.id}`)")
    try:
        final = await until_interrupted(follow(h))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    sys.exit(0 if final.state == HyperState.COMPLETE else 1)


@click.group()
def hyper() -> None:
    """Hyperparameter searches: many runs of one command, ranked by a metric.

    `conjure hyper grid -p rate=0.001,0.01 -p layers=2,3 --metric val_acc
    "python train.py --rate :rate: --layers :layers:"`"""


@hyper.command(name="grid", context_settings={"allow_interspersed_args": False})
@search_options
@aio
async def hyper_grid(command: tuple[str, ...], **kw: Any) -> None:
    """One run for every combination of the --param values."""
    await _start("grid", command, 0, None, **kw)


@hyper.command(name="random", context_settings={"allow_interspersed_args": False})
@search_options
@click.option("-n", "--num-runs", type=click.IntRange(min=1), required=True,
              help="How many runs, each with values drawn at random.")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=1), help="Make the draws repeatable.")
@aio
async def hyper_random(
    command: tuple[str, ...], num_runs: int, seed: int | None, **kw: Any
) -> None:
    """NUM_RUNS runs, each with values drawn at random from the --param lists and ranges."""
    await _start("random", command, num_runs, seed, **kw)


@hyper.command(name="bayes", context_settings={"allow_interspersed_args": False})
@search_options
@click.option("-n", "--num-runs", type=click.IntRange(min=1), required=True,
              help="How many runs in all.")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=1), help="Seed of the sampler.")
@aio
async def hyper_bayes(command: tuple[str, ...], num_runs: int, seed: int | None, **kw: Any) -> None:
    """NUM_RUNS runs whose values Optuna's TPE sampler chooses from the results so far
    (needs Optuna on the control worker: pip install 'conjure[bayes]')."""
    await _start("bayes", command, num_runs, seed, **kw)


@hyper.command(name="status")
@click.argument("hyper_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@aio
async def hyper_status(hyper_id: int, as_json: bool) -> None:
    """Show search HYPER_ID: its runs, their values and metric, best first."""
    from conjure.cli.hyper import AsyncHyper

    st = await AsyncHyper(api(), hyper_id).status()
    if as_json:
        data = st.model_dump(mode="json")
        data["ranked"] = [r.model_dump(mode="json") for r in st.ranked()]
        click.echo(json.dumps(data, indent=2))
        return
    print_status(st)


def best_text(st: HyperStatus) -> str:
    """`0.6 (run 12)`: the best run's metric value, or `-`."""
    best = st.best
    return "-" if best is None else f"{best.value:.6g} (run {best.run_id})"


@hyper.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many searches.")  # fmt: skip
@aio
async def hyper_ls(as_json: bool, limit: int) -> None:
    """List hyperparameter searches, newest first: id, kind, state, best, created."""
    from conjure.cli.hyper import list_hypers, run_state_final

    found = await list_hypers(api(), limit)
    if as_json:
        out = []
        for st in found:
            best = st.best
            out.append({
                "id": st.hyper_id, "kind": st.kind, "state": st.state.value,
                "metric": st.metric, "metric_agg": st.metric_agg, "goal": st.goal,
                "best_run": best.run_id if best else None,
                "best_value": best.value if best else None,
                "best_params": best.params if best else None,
                "runs_ended": sum(1 for r in st.runs if run_state_final(r.state)),
                "planned": st.planned,
                "created": st.created.isoformat() if st.created else None,
                "command": st.command,
            })  # fmt: skip
        click.echo(json.dumps(out, indent=2))
        return
    rows = [["ID", "KIND", "STATE", "RUNS", "METRIC", "BEST", "CREATED", "COMMAND"]]
    for st in found:
        done = sum(1 for r in st.runs if run_state_final(r.state))
        metric = f"{st.metric} ({st.metric_agg})" if st.metric else "-"
        cmd = st.command if len(st.command) <= 50 else st.command[:47] + "..."
        rows.append([str(st.hyper_id), st.kind, st.state.value, f"{done}/{st.planned}",
                     metric, best_text(st), fmt_time(st.created), cmd])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@hyper.command(name="stop")
@click.argument("hyper_id", type=int)
@aio
async def hyper_stop(hyper_id: int) -> None:
    """Stop search HYPER_ID: its running runs are stopped, no new run starts."""
    from conjure.cli.hyper import AsyncHyper

    await AsyncHyper(api(), hyper_id).stop()
    info(f"stopping hyperparameter search {hyper_id}")


COMMANDS = [hyper]
