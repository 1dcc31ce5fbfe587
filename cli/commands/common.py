"""What every command shares: the API object, echoing to stderr, running a coroutine,
and the formatting of times, durations, costs, sizes and log lines."""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from conjure.cli.facade import AsyncConjure
    from conjure.infra.logs import LogLine
    from conjure.infra.stack import UpReport


class Session:
    """What the entry point needs to know after a command: the run it was showing
    (for the 'Detached' line on ^C)."""

    current_run: int | None = None


def api() -> AsyncConjure:
    """The Python API with the settings of this process."""
    from conjure.cli.facade import AsyncConjure
    from conjure.infra.config import get_settings

    return AsyncConjure(get_settings())


def info(msg: str) -> None:
    """A progress or state line: stderr, so stdout keeps only what was asked for."""
    click.echo(msg, err=True)


def warn(msg: str) -> None:
    info(f"⚠️  {msg}")


def aio(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async command body with asyncio.run."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


T = TypeVar("T")


async def until_interrupted(work: Coroutine[Any, Any, T]) -> T:
    """`work`, or KeyboardInterrupt as soon as ^C comes, whatever `work` is awaiting.

    asyncio.run turns ^C into a cancellation of the command's task, and an await deep in
    a client library can take that cancellation for its own (an RPC ending CANCELLED,
    caught as a failed call) and go on: the ^C would be lost and the command follow the
    run to its end. Here ^C is a signal handler's event that the command waits on beside
    `work`, so no library code stands between them."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return await work
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task}, timeout=2)  # let it close what it holds, not longer
        if task.done() and not task.cancelled():
            task.exception()  # what it ended with no longer matters: retrieved, not logged
        raise KeyboardInterrupt
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        waiter.cancel()
        if not task.done():
            task.cancel()


def say_started(c: AsyncConjure) -> None:
    """Tell the user when a command started the embedded stack for them."""
    if c.started_stack and c.started_stack.started:
        info(
            f"✨ Started the embedded stack ({', '.join(c.started_stack.started)}) in "
            f"{c.settings.home}; Temporal Web UI: {c.settings.ui_url}"
            + console_note(c.started_stack)
        )
        for problem in c.started_stack.problems:
            warn(problem)


def console_note(report: UpReport) -> str:
    """'; console: URL (token: …)' when the stack serves the web console."""
    if not report.console_url:
        return ""
    token = f" (token: {report.console_token})" if report.console_token else ""
    return f"; console: {report.console_url}{token}"


def fmt_time(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "-"
    return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def emit_log(line: LogLine) -> None:
    """A run's log line: its stdout to stdout, its stderr and Conjure's notes to stderr."""
    if line.stream == "e" or line.stream == "c":
        click.echo(line.text, err=True)
    else:
        click.echo(line.text)
        sys.stdout.flush()  # keep the program's lines in order with the state lines
