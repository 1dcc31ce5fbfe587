"""Control-queue activities of pipelines: run ids come from the counter workflow,
whose Update a workflow cannot send itself."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from conjure.infra.config import Settings
from conjure.infra.counters import allocate
from conjure.workflows import keys
from conjure.workflows.activity_defs import PipelineActivityDefs
from conjure.workflows.models import AllocateInput, AllocateResult


class PipelineActivities(PipelineActivityDefs):
    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @activity.defn(name="allocate_run_id")
    async def allocate_run_id(self, inp: AllocateInput) -> AllocateResult:
        """Deduplicated by the request id, so a retried attempt gets the same id."""
        return await allocate(
            self.client,
            keys.COUNTER_WORKFLOW_ID,
            self.settings.control_task_queue,
            inp.request_id,
        )
