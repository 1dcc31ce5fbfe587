"""The stop-condition child workflow of a run: evaluates the run's stop conditions
(workflows/stop_conditions.py) over batched metric signals and signals its parent run
`stop` when one fires."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.run_inbox import RunInbox
    from conjure.workflows.stop_conditions import (
        MetricBatch,
        StopConditionInput,
        StopConditionResult,
        StopConditionState,
        StopRequest,
        evaluate,
    )


@workflow.defn
class StopConditionWorkflow:
    """Child of a run: evaluates its stop conditions over batched metric signals."""

    @workflow.init
    def __init__(self, inp: StopConditionInput) -> None:
        self.conditions = inp.conditions
        self.state = inp.state or StopConditionState()
        self.closed = False

    @workflow.signal
    def metrics(self, batch: MetricBatch) -> None:
        evaluate(self.conditions, self.state, batch.points)

    @workflow.signal
    def close(self) -> None:
        self.closed = True

    @workflow.query
    def view(self) -> StopConditionState:
        return self.state

    @workflow.run
    async def run(self, inp: StopConditionInput) -> StopConditionResult:
        await workflow.wait_condition(
            lambda: (
                self.state.hit is not None
                or self.closed
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        if self.state.hit is None and not self.closed:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(
                StopConditionInput(run_id=inp.run_id, conditions=self.conditions, state=self.state)
            )
        if self.state.hit is not None:
            parent = workflow.info().parent
            if parent is not None:
                await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                    RunInbox.stop,
                    StopRequest(reason=self.state.hit.reason(), source="stop-condition"),
                )
        return StopConditionResult(hit=self.state.hit, points=self.state.points)
