"""Machine and pool administration: the pool's view, its queue (and so the runs listed
with their places in it), terminating a machine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, overload

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from conjure.cli import listing
from conjure.cli.client import Connection
from conjure.cli.listing import RunFilter, RunsPage
from conjure.cli.liveness import query_or_none
from conjure.infra.errors import ConjureError
from conjure.infra.pool_config import configure_pool
from conjure.workflows import keys
from conjure.workflows.models import (
    PoolView,
    RunState,
    TerminateMachineRequest,
    TerminateMachineResult,
)
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.pool_shards import (
    machine_shard,
    merge_views,
    shard_workflow_id,
    shard_workflow_ids,
)


async def ensure_pool(conn: Connection) -> None:
    """Start the pool if needed; settings given explicitly here reach the running pool."""
    await configure_pool(await conn.client(), conn.settings, authoritative=False)


async def _shard_views(
    conn: Connection, ask: Callable[[Any], Awaitable[PoolView | None]]
) -> list[PoolView] | None:
    """Shard 0's view, then the other shards' (as many as this client's settings or
    shard 0 itself say there are); None when shard 0 gives none."""
    client = await conn.client()
    first = await ask(client.get_workflow_handle(keys.POOL_WORKFLOW_ID))
    if first is None:
        return None
    n = max(conn.settings.pool_shards, first.config.shards)
    if n == 1:
        return [first]
    ids = shard_workflow_ids(n)[1:]
    rest = await asyncio.gather(*(ask(client.get_workflow_handle(i)) for i in ids))
    return [first, *(v for v in rest if v is not None)]


async def pool_view(conn: Connection) -> PoolView:
    """The pool's machines and queue, all shards together."""
    await ensure_pool(conn)

    async def ask(h: Any) -> PoolView:
        return await h.query(PoolWorkflow.view)

    views = await _shard_views(conn, ask)
    assert views is not None
    return merge_views(views)


async def view_if_started(conn: Connection) -> PoolView | None:
    """The pool's machines and queue, or None when no pool has started (reads only)."""

    async def ask(h: Any) -> PoolView | None:
        try:
            return await h.query(PoolWorkflow.view)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    views = await _shard_views(conn, ask)
    return merge_views(views) if views else None


@overload
async def queue_positions(conn: Connection) -> dict[str, int]: ...
@overload
async def queue_positions(conn: Connection, quick: bool) -> dict[str, int] | None: ...


async def queue_positions(conn: Connection, quick: bool = False) -> dict[str, int] | None:
    """Run workflow id -> place in its pool shard's queue (1 = next). quick: None when no
    control worker answers at once (never waits on a dead one)."""
    client = await conn.client()

    async def ask(h: Any) -> PoolView | None:
        return await query_or_none(
            lambda t: h.query(PoolWorkflow.view, rpc_timeout=t),
            client,
            conn.settings.control_task_queue,
        )

    views = await _shard_views(conn, ask)
    if views is None:
        return None if quick else {}
    return {q.run_workflow_id: i for v in views for i, q in enumerate(v.queue, start=1)}


async def runs_page(
    conn: Connection, flt: RunFilter | None = None, *, limit: int = 50, before: int | None = None
) -> RunsPage:
    """A page of runs (newest first) and the `before` of the next one; Requested runs get
    their place in the queue."""
    page = await listing.runs_page(await conn.client(), flt, limit=limit, before=before)
    if any(r.state == RunState.REQUESTED.value for r in page.runs):
        positions = await queue_positions(conn, quick=True)
        for r in page.runs:
            if positions is None:  # no control worker answered: places unknown
                r.queue_unknown = r.state == RunState.REQUESTED.value
            else:
                r.queue_position = positions.get(keys.run_workflow_id(r.run_id))
    return page


async def terminate_machine(
    conn: Connection, machine_id: str, force: bool = False
) -> TerminateMachineResult:
    """End a machine: after its current run, or at once with force."""
    client = await conn.client()
    await ensure_pool(conn)
    handle = client.get_workflow_handle(shard_workflow_id(machine_shard(machine_id)))
    try:
        return await handle.execute_update(
            PoolWorkflow.terminate_machine,
            TerminateMachineRequest(machine_id=machine_id, force=force),
        )
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        msg = getattr(cause, "message", None) or str(cause or e)
        raise ConjureError(msg) from None  # the pool refused: unknown machine, ...
