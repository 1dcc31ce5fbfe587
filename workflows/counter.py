"""The run-id counter: ascending, never reused, deduplicated by request id."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.models import AllocateInput, AllocateResult, CounterState

RECENT_REQUESTS = 1000


@workflow.defn
class CounterWorkflow:
    @workflow.init
    def __init__(self, state: CounterState | None = None) -> None:
        self.state = state or CounterState()

    @workflow.run
    async def run(self, state: CounterState | None = None) -> None:
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(self.state)

    @workflow.update
    def allocate(self, req: AllocateInput) -> AllocateResult:
        # Synchronous handler: no awaits, so no interleaving and no lock needed.
        known = self.state.recent.get(req.request_id)
        if known is not None:
            return AllocateResult(run_id=known, new=False)
        run_id = self.state.next_id
        self.state.next_id += 1
        self.state.recent[req.request_id] = run_id
        if len(self.state.recent) > RECENT_REQUESTS:
            oldest = next(iter(self.state.recent))
            del self.state.recent[oldest]
        return AllocateResult(run_id=run_id, new=True)

    @workflow.query
    def peek(self) -> CounterState:
        return self.state

    @allocate.validator
    def _validate(self, req: AllocateInput) -> None:
        if not req.request_id:
            raise ValueError("request_id is required")
