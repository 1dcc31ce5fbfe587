"""Allocating ids from a counter workflow (run ids, pipeline ids): one Update-with-start,
deduplicated by the request id, so a retried call gets the same id."""

from __future__ import annotations

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from conjure.workflows.counter import CounterWorkflow
from conjure.workflows.models import AllocateInput, AllocateResult, CounterState


async def allocate(
    client: Client, counter_id: str, task_queue: str, request_id: str
) -> AllocateResult:
    start = WithStartWorkflowOperation(
        CounterWorkflow.run,
        CounterState(),
        id=counter_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await client.execute_update_with_start_workflow(
        CounterWorkflow.allocate,
        AllocateInput(request_id=request_id),
        start_workflow_operation=start,
    )
