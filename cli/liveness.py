"""Whether a control worker is there to answer: queries never hang on a dead one.

A query is answered by a worker hosting the workflow. With none polling the control
task queue (a production cluster where nothing restarts a crashed `conjure worker`),
the server holds the query until its deadline. So a query first gets a short deadline;
when that passes, the task queue's pollers decide: none seen lately means no worker
(a one-line error), a recent one means a busy worker, or one that died less than a
minute ago (the server cannot tell them apart yet): then the caller's answer from
history when it has one (`cli/recorded.py`, marked stale) rather than a 30 s wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from conjure.infra.errors import UnreachableError
from conjure.infra.temporal import workflow_pollers

T = TypeVar("T")

# The first try's deadline: a live worker answers a query in milliseconds.
QUICK = timedelta(seconds=1.5)
# A query not answered by then has the task queue's pollers looked up (and the run's
# history read) beside it, so that the fallback is ready when QUICK passes.
EARLY = 0.5
# A live, idle worker renews its long poll at least this often (the server's one-minute
# long-poll expiry, plus slack): a poller not seen for longer is gone.
POLLER_FRESH_SECONDS = 75.0


class NoControlWorker(UnreachableError):
    """No control worker answers the task queue: nothing would move the workflows."""


async def recent_pollers(client: Client, task_queue: str) -> int:
    """How many workers polled `task_queue` for workflow tasks lately (0: none)."""
    pollers = await workflow_pollers(client, task_queue, QUICK)
    now = time.time()
    return sum(
        1
        for p in pollers
        if p.HasField("last_access_time")
        and now - p.last_access_time.ToSeconds() < POLLER_FRESH_SECONDS
    )


def _no_poller(e: RPCError) -> bool:
    """The server's own verdict: it saw no worker poll the workflow's task queue lately."""
    return e.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in str(e).lower()


def _timed_out(e: RPCError) -> bool:
    """A deadline that passed, not a cancellation of ours: an RPC in flight when this
    task is cancelled (^C while `conjure run` follows a run) ends as CANCELLED too, and
    that one must stay a cancellation."""
    if e.status == RPCStatusCode.CANCELLED:
        _raise_if_cancelling()
    return e.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling() > 0:
        raise asyncio.CancelledError


async def _within_quick(query: asyncio.Future[T], started: float) -> T:
    """The query's answer, bounded by QUICK from `started` (the loop's time) as a whole,
    TimeoutError past it: its rpc_timeout bounds one call, and the client retries some
    failures with another."""
    left = started + QUICK.total_seconds() + 0.1 - asyncio.get_running_loop().time()
    return await asyncio.wait_for(query, timeout=max(left, 0.0))


async def _alive(client: Client, task_queue: str) -> int:
    try:
        return await recent_pollers(client, task_queue)
    except RPCError as e:
        if e.status == RPCStatusCode.CANCELLED:
            _raise_if_cancelling()
        return 0


async def query_with_liveness(
    client: Client,
    task_queue: str,
    ask: Callable[[timedelta | None], Awaitable[T]],
    recorded: Callable[[str], Awaitable[tuple[T, bool]]] | None = None,
) -> T:
    """`ask(rpc_timeout)` runs the query. NoControlWorker (exit 1, one line) when it
    times out and no worker polls `task_queue`.

    `recorded(why)`, when given, answers without a worker (from the history): it gives
    (answer, exact), the answer marked with `why` when it is not exact. A query not
    answered within EARLY has the pollers looked up and the history read beside it.
    When it times out (QUICK) and no worker polls: an exact answer from the history,
    else NoControlWorker. Pollers that look
    alive but no answer within QUICK (a busy worker, or one dead for less than
    POLLER_FRESH_SECONDS: the server cannot tell yet): the recorded answer, rather than
    waiting for a worker that may never come."""
    no_worker = NoControlWorker(
        f"no control worker is polling {task_queue} (start one with `conjure worker`)"
    )
    why = (
        f"the control worker polling {task_queue} did not answer within "
        f"{QUICK.total_seconds():g} s (busy, or gone); this is the state the run's "
        "history records, possibly stale"
    )
    started = asyncio.get_running_loop().time()
    query = asyncio.ensure_future(ask(QUICK))
    history: asyncio.Future[tuple[T, bool]] | None = None

    def read_history() -> asyncio.Future[tuple[T, bool]] | None:
        nonlocal history
        if history is None and recorded is not None:
            history = asyncio.ensure_future(recorded(why))
        return history

    async def without_worker() -> T:
        h = read_history()
        if h is not None:
            answer, exact = await h
            if exact:
                return answer
        raise no_worker

    pollers: asyncio.Future[int] | None = None
    try:
        await asyncio.wait({query}, timeout=EARLY)
        if not query.done():
            # Looked up beside the query, but acted on only once it timed out: a busy
            # live worker may still answer, and a loaded server can miss its pollers.
            read_history()
            pollers = asyncio.ensure_future(_alive(client, task_queue))
        try:
            return await _within_quick(query, started)
        except TimeoutError:
            pass  # as the query's own deadline: the client may retry a call past it
        except RPCError as e:
            if _no_poller(e):
                return await without_worker()
            if not _timed_out(e):
                raise
        alive = await (pollers or _alive(client, task_queue))
        if not alive:
            return await without_worker()
        h = read_history()
        if h is not None:
            try:
                return (await h)[0]
            except RPCError as e:
                raise NoControlWorker(
                    f"the control worker polling {task_queue} did not answer within "
                    f"{QUICK.total_seconds():g} s, and the run's history could not be read: "
                    f"{e.message}"
                ) from None
    finally:
        for f in (query, history, pollers):
            if f is None:
                continue
            if not f.done():
                f.cancel()
            elif not f.cancelled():
                f.exception()  # retrieved: no "never retrieved" warning on stderr
    try:
        return await ask(timedelta(seconds=30))  # a worker is there, only busy
    except RPCError as e:
        if _no_poller(e):
            raise no_worker from None
        if _timed_out(e):
            raise NoControlWorker(
                f"the control worker polling {task_queue} did not answer in time"
            ) from None
        raise


async def query_or_none(
    ask: Callable[[timedelta | None], Awaitable[T]],
    client: Client | None = None,
    task_queue: str = "",
) -> T | None:
    """The query's answer, or None when no worker answers quickly (for listings that
    can go without it, such as queue places in `conjure ls`). With `client` and
    `task_queue`: None as soon as EARLY has passed and no worker polls `task_queue`."""
    started = asyncio.get_running_loop().time()
    query = asyncio.ensure_future(ask(QUICK))
    try:
        if client is not None:
            await asyncio.wait({query}, timeout=EARLY)
            if not query.done() and not await _alive(client, task_queue):
                return None
        return await _within_quick(query, started)
    except TimeoutError:
        return None
    except RPCError as e:
        if e.status == RPCStatusCode.CANCELLED:
            _raise_if_cancelling()
        return None
    finally:
        if not query.done():
            query.cancel()
        elif not query.cancelled():
            query.exception()
