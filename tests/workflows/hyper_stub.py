"""A stand-in run workflow for the hyperparameter search's workflow test: registered
under the name `RunWorkflow`, it reports itself through an activity, waits its
command's number of seconds (or a stop) and ends Complete (or Stopped). Its own module
so the workflow sandbox imports nothing of pytest."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.models import RunInput, RunState, RunStatus


@workflow.defn(name="RunWorkflow")
class StubRunWorkflow:
    def __init__(self) -> None:
        self.stopped = False

    @workflow.signal
    def stop(self, req: object = None) -> None:
        self.stopped = True

    @workflow.run
    async def run(self, inp: RunInput) -> RunStatus:
        await workflow.execute_activity(
            "stub_started", inp, start_to_close_timeout=timedelta(seconds=10)
        )
        seconds = float(inp.spec.command.split()[-1])
        try:
            await workflow.wait_condition(lambda: self.stopped, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            pass
        await workflow.execute_activity(
            "stub_ended", inp.run_id, start_to_close_timeout=timedelta(seconds=10)
        )
        state = RunState.STOPPED if self.stopped else RunState.COMPLETE
        return RunStatus(run_id=inp.run_id, state=state, spec=inp.spec)
