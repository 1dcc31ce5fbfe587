"""The pipeline workflow, `pipeline-<P>`: a graph of steps, each an ordinary run.

Each step waits for the steps it depends on, gets a run id from the counter (through
the `allocate_run_id` activity: a workflow cannot send an Update itself), resolves its
`{steps.NAME}` mounts to those steps' runs and runs as a child RunWorkflow `run-<N>`.
Independent steps run in parallel. A step whose dependency did not complete is
Skipped; the others go on; the pipeline fails if any step did not complete.
`stop` stops the running steps and starts no new one.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows import keys, run_outcome
    from conjure.workflows.activity_defs import PipelineActivityDefs
    from conjure.workflows.models import (
        AllocateInput,
        MountSpec,
        RunInput,
        RunState,
    )
    from conjure.workflows.pipeline_models import (
        PipelineInput,
        PipelineState,
        PipelineStatus,
        PipelineStep,
        StepState,
        StepStatus,
        step_ref,
    )
    from conjure.workflows.pool_shards import pool_for_run
    from conjure.workflows.run import RunWorkflow


@workflow.defn
class PipelineWorkflow:
    @workflow.init
    def __init__(self, inp: PipelineInput) -> None:
        self.inp = inp
        self.pipeline_status = PipelineStatus(
            pipeline_id=inp.pipeline_id,
            name=inp.name,
            resumed_from=inp.resumed_from,
            created=workflow.now(),
            steps=[StepStatus(name=s.name, depends_on=list(s.depends_on)) for s in inp.steps],
        )
        self.steps = {s.name: s for s in self.pipeline_status.steps}
        self.children: dict[str, workflow.ChildWorkflowHandle] = {}
        self.stop_requested = False

    @workflow.query
    def status(self) -> PipelineStatus:
        return self.pipeline_status

    @workflow.query
    def definition(self) -> PipelineInput:
        return self.inp

    @workflow.signal
    async def stop(self) -> None:
        if self.stop_requested:
            return
        self.stop_requested = True
        for name, child in list(self.children.items()):
            if self.steps[name].state == StepState.RUNNING:
                await self._stop_child(child)

    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineStatus:
        for name, run_id in inp.reuse.items():
            if name in self.steps:
                st = self.steps[name]
                st.state, st.run_id, st.reused = StepState.COMPLETE, run_id, True
                st.run_state = RunState.COMPLETE.value
        await asyncio.gather(
            *(self._run_step(step) for step in inp.steps if not self.steps[step.name].reused)
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        states = [s.state for s in self.pipeline_status.steps]
        if all(s == StepState.COMPLETE for s in states):
            self.pipeline_status.state = PipelineState.COMPLETE
        elif self.stop_requested:
            self.pipeline_status.state = PipelineState.STOPPED
            self.pipeline_status.reason = "stopped"
        else:
            self.pipeline_status.state = PipelineState.FAILED
            bad = [s.name for s in self.pipeline_status.steps if s.state == StepState.FAILED]
            self.pipeline_status.reason = (
                f"step(s) failed: {', '.join(bad)}" if bad else "not complete"
            )
        self.pipeline_status.ended = workflow.now()
        return self.pipeline_status

    async def _run_step(self, step: PipelineStep) -> None:
        st = self.steps[step.name]
        await workflow.wait_condition(
            lambda: self.stop_requested or all(self.steps[d].state.final for d in step.depends_on)
        )
        if self.stop_requested:
            st.state, st.reason = (
                StepState.STOPPED,
                "the pipeline was stopped before the step started",
            )
            return
        bad = [d for d in step.depends_on if self.steps[d].state != StepState.COMPLETE]
        if bad:
            st.state = StepState.SKIPPED
            st.reason = f"step {bad[0]} is {self.steps[bad[0]].state.value}"
            return
        info = workflow.info()
        alloc = await workflow.execute_activity_method(
            PipelineActivityDefs.allocate_run_id,
            AllocateInput(request_id=f"{info.workflow_id}/{info.run_id}/{step.name}"),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
        run_id = alloc.run_id
        mounts = []
        for m in step.spec.mounts:
            ref = step_ref(m.source)
            if ref is not None:
                dep = self.steps[ref[0]]
                m = MountSpec(source=f"runs/{dep.run_id}{ref[1]}", dest=m.dest)
            mounts.append(m)
        spec = step.spec.model_copy(
            update={
                "mounts": mounts,
                "pipeline_id": self.inp.pipeline_id,
                "pipeline_step": step.name,
                "request_id": f"{info.workflow_id}/{info.run_id}/{step.name}",
            }
        )
        st.run_id, st.state = run_id, StepState.RUNNING
        try:
            child = await workflow.start_child_workflow(
                RunWorkflow.run,
                RunInput(
                    run_id=run_id,
                    spec=spec,
                    options=self.inp.options,
                    pool_workflow_id=pool_for_run(
                        run_id,
                        spec.machine_type.name,
                        self.inp.pool_shards,
                        self.inp.pool_shard_key,
                        self.inp.pool_workflow_id,
                    ),
                ),
                id=keys.run_workflow_id(run_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=keys.run_search_attributes(run_id, spec),
            )
            self.children[step.name] = child
            if self.stop_requested:
                await self._stop_child(child)
            result = await child
        except ChildWorkflowError as e:
            ended = run_outcome.status_of(e)  # a run that ended other than Complete
            if ended is None:
                st.state, st.reason = StepState.FAILED, str(e.cause or e)
                return
            result = ended
        st.run_state = result.state.value
        if result.state == RunState.COMPLETE:
            st.state = StepState.COMPLETE
        elif result.state in (RunState.STOPPED, RunState.KILLED) and self.stop_requested:
            st.state, st.reason = StepState.STOPPED, result.reason
        else:
            st.state, st.reason = (
                StepState.FAILED,
                f"run {run_id} {result.state.value}: {result.reason}",
            )

    @staticmethod
    async def _stop_child(child: workflow.ChildWorkflowHandle) -> None:
        try:
            await child.signal(RunWorkflow.stop)
        except Exception:  # the run ended meanwhile
            pass
