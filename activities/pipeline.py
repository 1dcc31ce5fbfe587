"""Control-queue activities of pipelines: run ids come from the counter workflow,
whose Update a workflow cannot send itself."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from infra.config import Settings
from workflows import keys
from workflows.counter import CounterWorkflow
from workflows.models import AllocateInput, AllocateResult, CounterState


class PipelineActivities:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @activity.defn(name="allocate_run_id")
    async def allocate_run_id(self, inp: AllocateInput) -> AllocateResult:
        """Deduplicated by the request id, so a retried attempt gets the same id."""
        start = WithStartWorkflowOperation(
            CounterWorkflow.run,
            CounterState(),
            id=keys.COUNTER_WORKFLOW_ID,
            task_queue=self.settings.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return await self.client.execute_update_with_start_workflow(
            CounterWorkflow.allocate, inp, start_workflow_operation=start
        )

    def all(self) -> list:
        return [self.allocate_run_id]
