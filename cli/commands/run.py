"""`conjure run` and `conjure rerun`: start a run and follow it (or detach).

Progress and state lines go to stderr; the run's own output to stdout, so
`conjure run "…" > out.txt` keeps only what the program printed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import click

from conjure.cli.commands.common import (
    Session,
    aio,
    api,
    emit_log,
    fmt_duration,
    info,
    say_started,
    until_interrupted,
    warn,
)
from conjure.cli.commands.flags import run_flags, run_kwargs

if TYPE_CHECKING:
    from conjure.cli.facade import AsyncConjure
    from conjure.cli.runs import AsyncRun
    from conjure.workflows.models import RunState, RunStatus


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True)
@run_flags()
@aio
async def run(command: tuple[str, ...], background: bool, force: bool, **flags: Any) -> None:
    """Run COMMAND on a machine: `conjure run "python train.py"`."""
    from conjure.cli.code import asks_about_files

    c = api()
    kwargs = run_kwargs(flags)
    c.machine_type(kwargs.get("machine_type"))  # unknown type: exit 2 before anything starts

    def warn_unless_forced(w: str) -> None:
        if not (force and asks_about_files(w)):
            warn(w)

    handle = await c.run(" ".join(command), warn=warn_unless_forced, **kwargs)
    await follow_or_detach(c, handle, background)


RERUN_FLAGS = (
    "machine_type", "mounts", "env", "background", "github_url", "github_ref", "commit_ref",
)  # fmt: skip


@click.command()
@click.argument("run_id", type=int)
@click.argument("command", nargs=-1)
@run_flags(
    *RERUN_FLAGS,
    help={
        "machine_type": "Another machine type.",
        "mounts": "Mounts instead of the run's (repeatable).",
    },
)
@aio
async def rerun(run_id: int, command: tuple[str, ...], background: bool, **flags: Any) -> None:
    """Start a new run with RUN_ID's spec; COMMAND and the flags override it.

    SECRET* variables are not carried over: give them again with --env. Quote
    COMMAND, or put it after `--` when it has options of its own."""
    c = api()
    kwargs = run_kwargs(flags)
    if kwargs.get("machine_type"):
        c.machine_type(kwargs["machine_type"])
    kwargs["mounts"] = list(kwargs["mounts"]) or None  # none given: the run's own
    handle = await c.rerun(run_id, " ".join(command) or None, warn=warn, **kwargs)
    info(f"🔁 Rerun of run {run_id}")
    await follow_or_detach(c, handle, background)


async def follow_or_detach(c: AsyncConjure, handle: AsyncRun, background: bool) -> None:
    """Print the run's id (--background), or follow it and exit with its exit code."""
    say_started(c)
    Session.current_run = handle.id
    info(f"💫 Casting run #{handle.id}…")
    if background:
        click.echo(handle.id)
        return
    info("✨ Stop viewing logs with ^C (the run goes on)")
    try:
        status = await until_interrupted(follow_run(handle))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    sys.exit(exit_code(status))


async def follow_run(run: AsyncRun) -> RunStatus:
    """State lines and the program's lines until the run ends."""
    from conjure.workflows.models import RunState

    before_output = (RunState.REQUESTED, RunState.BUILDING, RunState.MOUNTING)
    reader = run.log_reader()
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
                emit_log(line)
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
        after = [p for p in pairs if p[0].state not in before_output]
        for prev, change in pairs:
            if prev.state in before_output:
                if prev.state == RunState.BUILDING:  # the build's lines belong before its end
                    for line in reader.poll(phases=("build",)):
                        emit_log(line)
                _print_transition(st, prev.state, change.state)
        for line in reader.poll():
            emit_log(line)
        for prev, change in after:
            _print_transition(st, prev.state, change.state)
        if st.state.final:
            for line in reader.poll():
                emit_log(line)
            _print_final(st)
            return st
        await asyncio.sleep(0.1)


def _state_words() -> dict[RunState, str]:
    from conjure.workflows.models import RunState

    return {
        RunState.REQUESTED: "Machine_Requested",
        RunState.BUILDING: "Building",
        RunState.MOUNTING: "Mounting",
        RunState.SAVING: "Saving",
        RunState.PUSHING: "Pushing",
    }


def _print_transition(st: RunStatus, prev: RunState, new: RunState) -> None:
    from conjure.workflows.models import RunState

    words = _state_words()
    if prev in words:
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
        info(f"✨ {words[prev]}… {word}{extra}")
    if new == RunState.RUNNING:
        info("✨ Run is running")


def mount_note(st: RunStatus) -> str:
    """' (runs/3/data: cached on this machine; uploads/x: downloaded)' for the Mounting line."""
    mounts = st.spec.mounts
    cached = st.mounts_cached
    if not mounts or len(cached) != len(mounts):
        return ""
    parts = [
        f"{m.source}: {'cached on this machine' if hit else 'downloaded'}"
        for m, hit in zip(mounts, cached, strict=False)
    ]
    return " (" + "; ".join(parts) + ")"


def _print_final(st: RunStatus) -> None:
    from conjure.workflows.models import RunState

    start = st.timeline[0].at
    end = st.timeline[-1].at
    info(f"🎉 Total run time: {fmt_duration((end - start).total_seconds())}")
    if st.state == RunState.COMPLETE:
        info(f"🎉 Run {st.run_id} complete")
    else:
        reason = f": {st.reason}" if st.reason else ""
        info(f"💥 Run {st.run_id} {st.state.value}{reason}")
        if st.log_tail:
            info("💥 The log's last lines:")
            for line in st.log_tail:
                info(f"    {line}")


def exit_code(st: RunStatus) -> int:
    """0 for a complete run, else the program's exit code (1 when it has none)."""
    from conjure.workflows.models import RunState

    if st.state == RunState.COMPLETE:
        return 0
    if st.exit_code:
        return st.exit_code
    return 1


COMMANDS = [run, rerun]
