"""The control worker's reaper: runs whose workflow was terminated from outside.

Every `reap_interval` seconds it reads the pool's view (each shard's), and for each machine leased to
a run workflow that is no longer running (terminated or timed out from the Temporal
Web UI or CLI: a run that ends by itself releases its lease before it closes) it
starts `RunReapWorkflow` (workflows/run_reap.py), which stops the run's container and
gives the machine back. Lease requests still queued for such a workflow are
withdrawn. Repeated passes are harmless: the reap workflow's id is the run's, and the
pool ignores a stale release.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from conjure.workflows import keys
from conjure.workflows.models import CancelLeaseRequest, Lease, MachineState, PoolView, RunState
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.pool_shards import shard_workflow_ids
from conjure.workflows.run import RunWorkflow
from conjure.workflows.run_reap import ReapInput, RunReapWorkflow, reap_workflow_id

log = logging.getLogger(__name__)


async def _closed(client: Client, workflow_id: str) -> bool:
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        return e.status == RPCStatusCode.NOT_FOUND  # gone from the server altogether
    return desc.status is not None and desc.status != WorkflowExecutionStatus.RUNNING


def _run_id(workflow_id: str) -> int | None:
    prefix = keys.run_workflow_id(0)[:-1]  # "run-"
    tail = workflow_id.removeprefix(prefix)
    return int(tail) if workflow_id.startswith(prefix) and tail.isdigit() else None


async def _waiting_for_lease(client: Client, workflow_id: str) -> bool:
    try:
        st = await client.get_workflow_handle(workflow_id).query(RunWorkflow.status)
    except Exception:  # no answer now: next pass
        return False
    return bool(st.state == RunState.REQUESTED)


async def reap_once(
    client: Client,
    task_queue: str,
    pool_workflow_id: str = keys.POOL_WORKFLOW_ID,
    waiting: set[str] | None = None,
) -> list[str]:
    """One pass; returns the run workflow ids whose machine it started giving back (or
    whose lease it granted again). `waiting`, kept between passes: runs seen Requested
    while holding a machine, a run workflow reset to before its lease was granted; a
    run seen so on two passes in a row gets its lease again (a repeated grant is a no-op)."""
    pool = client.get_workflow_handle(pool_workflow_id)
    try:
        view: PoolView = await pool.query(PoolWorkflow.view)
    except RPCError:
        return []  # no pool yet
    reaped = []
    still_waiting: set[str] = set()
    for m in view.machines:
        wid = m.run_workflow_id
        run_id = _run_id(wid) if wid else None
        if wid is None or run_id is None:
            continue
        if not await _closed(client, wid):
            if m.state == MachineState.BUSY and await _waiting_for_lease(client, wid):
                still_waiting.add(wid)
                if waiting is not None and wid in waiting:
                    lease = Lease(
                        machine_id=m.id,
                        task_queue=m.task_queue,
                        machine_type=m.machine_type,
                        provider=m.provider,
                        reused=True,
                    )
                    await client.get_workflow_handle(wid).signal(RunWorkflow.lease_granted, lease)
                    log.info("run workflow %s was reset: its lease on %s granted again", wid, m.id)
                    reaped.append(wid)
            continue
        await client.start_workflow(
            RunReapWorkflow.run,
            ReapInput(
                run_workflow_id=wid,
                run_id=run_id,
                machine_id=m.id,
                task_queue=m.task_queue,
                pool_workflow_id=pool_workflow_id,
            ),
            id=reap_workflow_id(wid),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        log.info("run workflow %s was closed from outside: giving back machine %s", wid, m.id)
        reaped.append(wid)
    for q in view.queue:
        if await _closed(client, q.run_workflow_id):
            await pool.signal(
                PoolWorkflow.cancel_lease, CancelLeaseRequest(run_workflow_id=q.run_workflow_id)
            )
            reaped.append(q.run_workflow_id)
    if waiting is not None:
        waiting.clear()
        waiting.update(still_waiting)
    return reaped


async def reap_forever(
    client: Client, task_queue: str, every: float, stop: asyncio.Event, shards: int = 1
) -> None:
    waiting = {pid: set[str]() for pid in shard_workflow_ids(shards)}
    while not stop.is_set():
        for pid, seen in waiting.items():  # each pool shard in turn
            try:
                await reap_once(client, task_queue, pid, waiting=seen)
            except Exception as e:  # the server is briefly unreachable: next round
                log.warning("reaper pass failed: %s", e)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except asyncio.TimeoutError:
            pass
