"""Whether a control worker is there to answer: queries never hang on a dead one.

A query is answered by a worker hosting the workflow. With none polling the control
task queue (a production cluster where nothing restarts a crashed `conjure worker`),
the server holds the query until its deadline. So a query first gets a short deadline;
when that passes, the task queue's pollers decide: none seen lately means no worker
(a one-line error), a recent one means a busy worker (asked again, patiently).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from conjure.infra.errors import UnreachableError

T = TypeVar("T")

# The first try's deadline: a live worker answers a query in milliseconds.
QUICK = timedelta(seconds=2)
# A live, idle worker renews its long poll at least this often (the server's one-minute
# long-poll expiry, plus slack): a poller not seen for longer is gone.
POLLER_FRESH_SECONDS = 75.0


class NoControlWorker(UnreachableError):
    """No control worker answers the task queue: nothing would move the workflows."""


async def recent_pollers(client: Client, task_queue: str) -> int:
    """How many workers polled `task_queue` for workflow tasks lately (0: none)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=QUICK,
    )
    now = time.time()
    return sum(
        1
        for p in resp.pollers
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


async def query_with_liveness(
    client: Client,
    task_queue: str,
    ask: Callable[[timedelta | None], Awaitable[T]],
) -> T:
    """`ask(rpc_timeout)` runs the query. NoControlWorker (exit 1, one line) when it
    times out and no worker polls `task_queue`."""
    no_worker = NoControlWorker(
        f"no control worker is polling {task_queue} (start one with `conjure worker`)"
    )
    try:
        return await ask(QUICK)
    except RPCError as e:
        if _no_poller(e):
            raise no_worker from None
        if not _timed_out(e):
            raise
    try:
        alive = await recent_pollers(client, task_queue)
    except RPCError as e:
        if e.status == RPCStatusCode.CANCELLED:
            _raise_if_cancelling()
        alive = 0
    if not alive:
        raise no_worker
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
) -> T | None:
    """The query's answer, or None when no worker answers quickly (for listings that
    can go without it, such as queue places in `conjure ls`)."""
    try:
        return await ask(QUICK)
    except RPCError as e:
        if e.status == RPCStatusCode.CANCELLED:
            _raise_if_cancelling()
        return None
