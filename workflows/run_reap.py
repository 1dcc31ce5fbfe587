"""Giving back the machine of a run whose workflow was terminated from outside.

A workflow cannot run code when it is terminated (the Temporal Web UI's Terminate, or
the termination a Reset does), so the run's own `finally` never releases its lease.
The control worker's reaper (activities/run_reaper.py) notices a closed run workflow
still holding a machine and starts this workflow, `reap-<run workflow id>`: it stops
and removes the run's container and workspace on the machine (`cleanup_workspace` on
the machine's queue), then releases the lease, healthy when the agent answered (the
machine goes back to the pool's idle machines), unhealthy otherwise (the pool ends it).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.activity_defs import MachineActivityDefs
    from conjure.workflows.models import CleanupInput, ReleaseRequest
    from conjure.workflows.pool import PoolWorkflow


class ReapInput(BaseModel):
    run_workflow_id: str
    run_id: int
    machine_id: str
    task_queue: str
    pool_workflow_id: str = "conjure-pool"


class ReapResult(BaseModel):
    cleaned: bool  # the agent stopped the container and removed the workspace


def reap_workflow_id(run_workflow_id: str) -> str:
    return f"reap-{run_workflow_id}"


@workflow.defn
class RunReapWorkflow:
    @workflow.run
    async def run(self, inp: ReapInput) -> ReapResult:
        cleaned = True
        try:
            await workflow.execute_activity_method(
                MachineActivityDefs.cleanup_workspace,
                CleanupInput(run_id=inp.run_id),
                task_queue=inp.task_queue,
                schedule_to_start_timeout=timedelta(seconds=60),
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            cleaned = False  # the agent does not answer: the pool ends the machine
        pool = workflow.get_external_workflow_handle(inp.pool_workflow_id)
        await pool.signal(
            PoolWorkflow.release,
            ReleaseRequest(
                machine_id=inp.machine_id, run_workflow_id=inp.run_workflow_id, healthy=cleaned
            ),
        )
        return ReapResult(cleaned=cleaned)
