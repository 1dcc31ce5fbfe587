"""The `conjure` command: parses, calls the Python API (cli/api.py), prints.

Progress and state lines go to stderr; the run's own output to stdout, so
`conjure run "…" > out.txt` keeps only what the program printed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

import click

from conjure.cli.api import AsyncConjure, AsyncRun, RunSummary
from conjure.cli.code import asks_about_files
from conjure.cli.env_cmds import env_options, register_env_commands
from conjure.cli.resources import mount_note
from conjure.cli.resources import register as register_resources
from conjure.cli.wording import error_message
from conjure.infra.config import get_settings
from conjure.infra.errors import ConjureError
from conjure.infra.logs import LogLine, LogReader
from conjure.worker_agent.commands import agent as agent_command
from conjure.worker_agent.commands import worker as worker_command
from conjure.workflows import cost as costs
from conjure.workflows.models import Machine, RunState, RunStatus

_current_run: int | None = None

STATE_WORDS = {
    RunState.REQUESTED: "Machine_Requested",
    RunState.BUILDING: "Building",
    RunState.MOUNTING: "Mounting",
    RunState.SAVING: "Saving",
    RunState.PUSHING: "Pushing",
}


def info(msg: str) -> None:
    click.echo(msg, err=True)


def aio(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def _api() -> AsyncConjure:
    return AsyncConjure(get_settings())


def _say_started(c: AsyncConjure) -> None:
    if c.started_stack and c.started_stack.started:
        info(
            f"✨ Started the embedded stack ({', '.join(c.started_stack.started)}) in "
            f"{c.settings.home}; Temporal Web UI: {c.settings.ui_url}"
            + _console_note(c.started_stack)
        )
        for problem in c.started_stack.problems:
            info(f"⚠️  {problem}")


def _console_note(report: Any) -> str:
    if not report.console_url:
        return ""
    token = f" (token: {report.console_token})" if report.console_token else ""
    return f"; console: {report.console_url}{token}"


def _fmt_time(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _emit_log(line: LogLine) -> None:
    if line.stream == "e" or line.stream == "c":
        click.echo(line.text, err=True)
    else:
        click.echo(line.text)
        sys.stdout.flush()  # keep the program's lines in order with the state lines


# --- the group --------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conjure")
def cli() -> None:
    """Conjure: run jobs on machines it provisions, as durable Temporal workflows."""


# --- stack ------------------------------------------------------------------------


@cli.command()
@aio
async def up() -> None:
    """Start the embedded stack (Temporal dev server, control worker, local machines)."""
    from conjure.infra import stack

    s = get_settings()
    report = await stack.up(s)
    for name in report.started:
        info(f"started {name}")
    for name in report.already:
        info(f"{name} already running")
    for problem in report.problems:
        info(f"⚠️  {problem}")
    info(
        f"Conjure is up in {s.home}; Temporal at {s.address}; Temporal Web UI: {s.ui_url}"
        + _console_note(report)
    )


@cli.command()
def down() -> None:
    """Stop the embedded stack. Runs and machines are kept for the next `conjure up`."""
    from conjure.infra import stack

    stopped = stack.down(get_settings())
    info("stopped " + ", ".join(stopped) if stopped else "nothing was running")


# `conjure worker` and `conjure agent`: the processes' own commands (one parser).
cli.add_command(worker_command)
cli.add_command(agent_command)


# --- run --------------------------------------------------------------------------


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


@cli.command(context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True)
@click.option("-t", "--machine-type", help="Machine type (see `conjure machine-types`).")
@click.option(
    "-m", "--mount", "mounts", multiple=True, metavar="SRC[:DEST]", help="Mount a resource."
)
@click.option("-e", "--env", "env", multiple=True, metavar="NAME=VALUE", help="Set a variable.")
@click.option("-b", "--background", is_flag=True, help="Print the run id and return at once.")
@click.option("--github-url", metavar="URL", help="Take the code from this git repository.")
@click.option("--github-ref", metavar="REF", help="Branch, tag or commit of --github-url.")
@click.option("--commit-ref", metavar="REF", help="Take the code from this local commit.")
@click.option(
    "-f", "--force", is_flag=True,
    help="Ask nothing about uncommitted or untracked files (Spell's `run -f`).",
)  # fmt: skip
@env_options
@click.option(
    "--stop-condition", "stop_conditions", multiple=True, metavar='"NAME OP VALUE[ : K]"',
    help="Stop the run when metric NAME satisfies OP (< > <= >=) VALUE, checked from its "
    "K-th value on (every value without K). Repeatable.",
)  # fmt: skip
@click.option(
    "--auto-resume", "auto_resume", type=click.IntRange(min=1), is_flag=False, flag_value=3,
    default=None, metavar="[N]",
    help="If the machine is reclaimed or lost, go on from the files saved so far on a new "
    "machine, up to N attempts in all (3 when N is not given; write --auto-resume=N "
    "right before the command).",
)  # fmt: skip
@click.option(
    "--spot-fallback", "spot_fallback", type=click.IntRange(min=1), metavar="K",
    help="With --auto-resume on a spot machine type: after K interruptions, on demand.",
)  # fmt: skip
@aio
async def run(
    command: tuple[str, ...],
    machine_type: str | None,
    mounts: tuple[str, ...],
    env: tuple[str, ...],
    background: bool,
    stop_conditions: tuple[str, ...] = (),
    github_url: str | None = None,
    github_ref: str | None = None,
    commit_ref: str | None = None,
    force: bool = False,
    auto_resume: int | None = None,
    spot_fallback: int | None = None,
    **env_flags: Any,
) -> None:
    """Run COMMAND on a machine: `conjure run "python train.py"`."""
    c = _api()
    envs = _parse_env(env)
    c.machine_type(machine_type)  # unknown type: exit 2 before anything starts

    def warn(w: str) -> None:
        if not (force and asks_about_files(w)):
            info(f"⚠️  {w}")

    handle = await c.run(
        " ".join(command),
        machine_type=machine_type,
        mounts=mounts,
        env=envs,
        warn=warn,
        github_url=github_url,
        github_ref=github_ref,
        commit_ref=commit_ref,
        **env_flags,
        stop_conditions=stop_conditions,
        auto_resume=auto_resume or 0,
        spot_fallback=spot_fallback or 0,
    )
    await _follow_or_detach(c, handle, background)


async def _follow_or_detach(c: AsyncConjure, handle: AsyncRun, background: bool) -> None:
    _say_started(c)
    global _current_run
    _current_run = handle.id
    info(f"💫 Casting run #{handle.id}…")
    if background:
        click.echo(handle.id)
        return
    info("✨ Stop viewing logs with ^C (the run goes on)")
    try:
        status = await follow_run(handle)
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    sys.exit(_exit_code(status))


_BEFORE_OUTPUT = (RunState.REQUESTED, RunState.BUILDING, RunState.MOUNTING)


async def follow_run(run: AsyncRun) -> RunStatus:
    reader = LogReader(run._c.store, run.id)
    shown = 1  # the Requested entry is implicit in "Casting run"
    loop = asyncio.get_running_loop()
    st: RunStatus | None = None
    asked = running_since = 0.0
    while True:
        reader.follow()  # the run's writer flushes at its fastest
        now = loop.time()
        # The state every 0.1 s, except once the program has run for 10 s: then every
        # second (each is a query to the workflow; the log is still read every 0.1 s).
        settled = st is not None and st.state == RunState.RUNNING and now - running_since > 10
        if st is not None and settled and now - asked < 1.0:
            for line in reader.poll():
                _emit_log(line)
            await asyncio.sleep(0.1)
            continue
        st = await run.status()
        asked = now
        if st.state != RunState.RUNNING:
            running_since = now
        pairs = list(zip(st.timeline[shown - 1 :], st.timeline[shown:], strict=False))
        shown = len(st.timeline)
        # State lines up to "Run is running", then the program's lines, then the rest,
        # so a quick run's output lands between them as it happened.
        after = [p for p in pairs if p[0].state not in _BEFORE_OUTPUT]
        for prev, change in pairs:
            if prev.state in _BEFORE_OUTPUT:
                if prev.state == RunState.BUILDING:  # the build's lines belong before its end
                    for line in reader.poll(phases=("build",)):
                        _emit_log(line)
                _print_transition(st, prev.state, change.state)
        for line in reader.poll():
            _emit_log(line)
        for prev, change in after:
            _print_transition(st, prev.state, change.state)
        if st.state.final:
            for line in reader.poll():
                _emit_log(line)
            _print_final(st)
            return st
        await asyncio.sleep(0.1)


def _print_transition(st: RunStatus, prev: RunState, new: RunState) -> None:
    if prev in STATE_WORDS:
        extra = ""
        if prev == RunState.REQUESTED and st.machine_id:
            how = "idle machine reused" if st.reused_machine else "new machine"
            extra = f" ({how} {st.machine_id}, {st.spec.machine_type.name})"
        if prev == RunState.BUILDING and st.image_cached is not None:
            extra = " (environment cached)" if st.image_cached else " (environment built)"
            if st.image_source == "pulled":
                extra = f" (environment pulled from the registry: {st.image})"
        if prev == RunState.PUSHING and st.image_pushed is not None:
            extra = (
                f" (pushed {st.image})" if st.image_pushed else " (the push failed, see the log)"
            )
        if prev == RunState.MOUNTING:
            extra = mount_note(st)
        word = "done"
        if new == RunState.FAILED and st.reason.startswith(f"{prev.value} failed"):
            word, extra = "failed", ""  # the step itself failed (the reason follows)
        elif new in (RunState.STOPPED, RunState.KILLED, RunState.INTERRUPTED):
            word, extra = new.value.lower(), ""
        info(f"✨ {STATE_WORDS[prev]}… {word}{extra}")
    if new == RunState.RUNNING:
        info("✨ Run is running")


def _print_final(st: RunStatus) -> None:
    start = st.timeline[0].at
    end = st.timeline[-1].at
    info(f"🎉 Total run time: {_fmt_duration((end - start).total_seconds())}")
    if st.state == RunState.COMPLETE:
        info(f"🎉 Run {st.run_id} complete")
    else:
        reason = f": {st.reason}" if st.reason else ""
        info(f"💥 Run {st.run_id} {st.state.value}{reason}")
        if st.log_tail:
            info("💥 The log's last lines:")
            for line in st.log_tail:
                info(f"    {line}")


def _exit_code(st: RunStatus) -> int:
    if st.state == RunState.COMPLETE:
        return 0
    if st.exit_code:
        return st.exit_code
    return 1


# --- inspecting runs -----------------------------------------------------------------


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


def _fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "-"
    return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


def _fmt_state(state: str, queue_position: int | str | None) -> str:
    return f"{state} #{queue_position}" if queue_position else state


@cli.command(name="ls")
@click.argument("path", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-n", "--limit", default=50, show_default=True, help="How many runs.")
@aio
async def ls_cmd(path: str, as_json: bool, limit: int) -> None:
    """List runs, or the resources under PATH (/, runs/N, uploads/…, public/…)."""
    c = _api()
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
    runs = await c.list_runs(limit=limit)
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
            f"{_fmt_time(r.created):<19}  {_fmt_duration(dur):>9}  {_fmt_cost(r.cost):>8}  {cmd}"
        )


def _run_cost(st: RunStatus) -> float | None:
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


@cli.command()
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@aio
async def status(run_id: int, as_json: bool) -> None:
    """Show run RUN_ID: its state timeline, machine, exit code and image."""
    c = _api()
    st = await AsyncRun(c, run_id).status()
    position = None
    if st.state == RunState.REQUESTED:
        position = (await c.queue_positions()).get(AsyncRun(c, run_id).workflow_id)
    if as_json:
        click.echo(json.dumps(_status_json(st, position), indent=2))
        return
    click.echo(f"Run {st.run_id}: {st.state.value}" + (f" ({st.reason})" if st.reason else ""))
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
        click.echo(f"  cost:         {_fmt_cost(run_cost)} (${price:g}/hour on the machine)")
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
            f"{_fmt_time(a.started)} - {_fmt_time(a.ended)} {_fmt_cost(a.cost)}: {a.state}"
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
        click.echo(f"  total time:   {_fmt_duration((end - st.created).total_seconds())}")
    click.echo("  timeline:")
    for ch in st.timeline:
        detail = f"  {ch.detail}" if ch.detail else ""
        click.echo(f"    {_fmt_time(ch.at)}  {ch.state.value}{detail}")
    if st.log_tail:
        click.echo("  log (last lines):")
        for line in st.log_tail:
            click.echo(f"    {line}")


@cli.command()
@click.argument("run_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Follow a live run until it ends.")
@aio
async def logs(run_id: int, follow: bool) -> None:
    """Print the log of run RUN_ID."""
    run = AsyncRun(_api(), run_id)
    async for line in run.logs(follow=follow):
        _emit_log(line)


register_resources(cli, lambda: _api())


from conjure.cli.pipeline_cmd import pipeline, rerun  # noqa: E402

cli.add_command(rerun)
cli.add_command(pipeline)

from conjure.cli.hyper_cmd import hyper  # noqa: E402

cli.add_command(hyper)

# --- machines ---------------------------------------------------------------------------


@cli.command(name="machine-types")
@click.option("--json", "as_json", is_flag=True)
def machine_types(as_json: bool) -> None:
    """List the machine types of the catalog."""
    cat = _api().catalog
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
    return costs.cost(m.price_per_hour, m.created, m.ended or now)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@aio
async def machines(ctx: click.Context, as_json: bool) -> None:
    """List the pool's machines; `conjure machines terminate ID` ends one."""
    if ctx.invoked_subcommand is not None:
        return
    view = await _api().pool()
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
            f"{_fmt_time(m.idle_since):<19} {m.runs_served:>4} {_fmt_cost(_machine_cost(m, now)):>9}"
        )
    if view.queue:
        click.echo(f"{len(view.queue)} run(s) waiting for a machine")
    from conjure.cli.fleet import ssh_host_lines

    for line in ssh_host_lines(_api().settings):
        click.echo(line)


@machines.command(name="terminate")
@click.argument("machine_id")
@click.option("--force", is_flag=True, help="Terminate now, interrupting its run.")
@aio
async def machines_terminate(machine_id: str, force: bool) -> None:
    """Terminate machine MACHINE_ID (after its current run, unless --force)."""
    res = await _api().terminate_machine(machine_id, force=force)
    if res.after_run:
        info(f"machine {res.machine_id} will terminate after its run ({res.after_run})")
    else:
        info(f"machine {res.machine_id} is terminating")


register_env_commands(cli, _api)
from conjure.cli.code_cmds import COMMANDS as _CODE_COMMANDS  # noqa: E402
from conjure.cli.control import COMMANDS as _CONTROL_COMMANDS  # noqa: E402

for _cmd in _CONTROL_COMMANDS + _CODE_COMMANDS:
    cli.add_command(_cmd)

from conjure.cli.console.command import console as _console_command  # noqa: E402

cli.add_command(_console_command)


# --- entry point ---------------------------------------------------------------------------


def main() -> None:
    code = _main()
    # The Temporal client's Rust threads can crash CPython's finalisation (a known
    # issue of the SDK's bridge): flush and leave without interpreter teardown.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _main() -> int:
    debug = bool(os.environ.get("CONJURE_DEBUG"))
    try:
        rv = cli.main(standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        info(f"error: {e.format_message()}{hint}")
        return e.exit_code
    except click.ClickException as e:
        info(f"error: {e.format_message()}")
        return e.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        _detached_hint()
        return 130
    except ConjureError as e:
        info(f"error: {error_message(e)}")
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        info(f"error: {type(e).__name__}: {msg} (set CONJURE_DEBUG=1 for details)")
        return 1


def _detached_hint() -> None:
    if _current_run is not None:
        info(
            f"✨ Detached: run {_current_run} goes on. "
            f"Follow it again with `conjure logs -f {_current_run}`"
        )


if __name__ == "__main__":
    main()
