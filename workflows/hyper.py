"""The hyperparameter search workflow, `hyper-<H>`: many runs of one command, each with
its own parameter values, ranked by a metric.

grid: every combination of the values; random: `num_runs` draws, made here with
`workflow.random()` (deterministic on replay); bayes: each run's values come from the
`hyper_suggest` activity (Optuna), given the values and results of the runs so far,
so the workflow itself stays deterministic.

Each run is an ordinary child RunWorkflow `run-<N>` (its id from the run counter through
the `allocate_run_id` activity, as pipelines do), at most `parallel` at once; the pool's
concurrency limit applies on top. When a run ends, the `hyper_metric` activity reads its
metric from the store and returns one aggregated value: metrics never pass through
this history, only that summary. `stop` stops the running runs and starts no new one.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows import keys, run_outcome
    from conjure.workflows.activity_defs import HyperActivityDefs, PipelineActivityDefs
    from conjure.workflows.hyper_models import (
        HyperInput,
        HyperMetricInput,
        HyperRun,
        HyperState,
        HyperStatus,
        HyperSuggestInput,
        HyperTrial,
        check_search,
        grid,
        sample_all,
        substitute,
    )
    from conjure.workflows.models import AllocateInput, RunInput, RunState
    from conjure.workflows.pool_shards import pool_for_run
    from conjure.workflows.run import RunWorkflow

CONTROL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=10))


@workflow.defn
class HyperWorkflow:
    @workflow.init
    def __init__(self, inp: HyperInput) -> None:
        self.inp = inp
        self.st = HyperStatus(
            hyper_id=inp.hyper_id,
            kind=inp.kind,
            command=inp.spec.command,
            params=inp.params,
            metric=inp.metric,
            metric_agg=inp.metric_agg,
            goal=inp.goal,
            parallel=inp.parallel,
            planned=check_search(inp.kind, inp.spec.command, inp.params, inp.num_runs),
            created=workflow.now(),
        )
        self.children: dict[int, workflow.ChildWorkflowHandle] = {}
        self.running = 0
        self.stop_requested = False

    @workflow.query
    def status(self) -> HyperStatus:
        return self.st

    @workflow.signal
    async def stop(self) -> None:
        if self.stop_requested:  # a repeated stop is a no-op
            return
        self.stop_requested = True
        for index, child in list(self.children.items()):
            if not RunState(self.st.runs[index].state).final:
                await _stop_child(child)

    @workflow.run
    async def run(self, inp: HyperInput) -> HyperStatus:
        if inp.kind == "grid":
            planned = grid(inp.params)
        elif inp.kind == "random":
            # a given seed makes the draws repeatable; else Temporal's seeded random
            rng = random.Random(inp.seed) if inp.seed else workflow.random()
            planned = [sample_all(inp.params, rng) for _ in range(self.st.planned)]
        else:
            planned = []  # bayes: suggested one by one
        self.st.runs = [HyperRun(index=i, params=p) for i, p in enumerate(planned)]
        tasks = []
        for i in range(self.st.planned):
            await workflow.wait_condition(
                lambda: self.stop_requested or not inp.parallel or self.running < inp.parallel
            )
            if self.stop_requested:
                break
            if inp.kind == "bayes":
                try:
                    suggested = await self._suggest()
                except ActivityError as e:
                    self.st.state = HyperState.FAILED
                    self.st.reason = f"no values to try next: {_cause(e)}"
                    break
                self.st.runs.append(HyperRun(index=i, params=suggested))
                if self.stop_requested:
                    self.st.runs.pop()
                    break
            self.running += 1
            tasks.append(asyncio.create_task(self._run_one(self.st.runs[i])))
        await asyncio.gather(*tasks)
        await workflow.wait_condition(workflow.all_handlers_finished)
        for r in self.st.runs:
            if r.run_id is None:
                r.state, r.reason = "Not started", "the search was stopped first"
        if self.st.state == HyperState.FAILED:
            pass
        elif self.stop_requested:
            self.st.state, self.st.reason = HyperState.STOPPED, "stopped"
        else:
            self.st.state = HyperState.COMPLETE
        best = self.st.best
        if best is not None:
            self.st.reason = (self.st.reason + "; " if self.st.reason else "") + (
                f"best: run {best.run_id} with {inp.metric} = {best.value:g}"
            )
        self.st.ended = workflow.now()
        return self.st

    async def _suggest(self) -> dict[str, str]:
        out = await workflow.execute_activity_method(
            HyperActivityDefs.hyper_suggest,
            HyperSuggestInput(
                params=self.inp.params,
                goal=self.inp.goal,
                seed=self.inp.seed,
                trials=[
                    HyperTrial(params=r.params, value=r.value, done=r.done) for r in self.st.runs
                ],
            ),
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=CONTROL_RETRY,
        )
        return out.params

    async def _run_one(self, run: HyperRun) -> None:
        inp = self.inp
        info = workflow.info()
        request_id = f"{info.workflow_id}/{info.run_id}/{run.index}"
        try:
            alloc = await workflow.execute_activity_method(
                PipelineActivityDefs.allocate_run_id,
                AllocateInput(request_id=request_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CONTROL_RETRY,
            )
            run.run_id = alloc.run_id
            spec = inp.spec.model_copy(
                update={
                    "command": substitute(inp.spec.command, run.params),
                    "request_id": request_id,
                    "hyper_id": inp.hyper_id,
                }
            )
            run.state = RunState.REQUESTED.value
            try:
                child = await workflow.start_child_workflow(
                    RunWorkflow.run,
                    RunInput(
                        run_id=alloc.run_id,
                        spec=spec,
                        options=inp.options,
                        pool_workflow_id=pool_for_run(
                            alloc.run_id,
                            spec.machine_type.name,
                            inp.pool_shards,
                            inp.pool_shard_key,
                            inp.pool_workflow_id,
                        ),
                        stop_conditions=inp.stop_conditions,
                    ),
                    id=keys.run_workflow_id(alloc.run_id),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    search_attributes=keys.run_search_attributes(alloc.run_id, spec),
                )
                self.children[run.index] = child
                if self.stop_requested:
                    await _stop_child(child)
                result = await child
                run.state, run.reason = result.state.value, result.reason
            except ChildWorkflowError as e:
                ended = run_outcome.status_of(e)  # a run that ended other than Complete
                run.state, run.reason = (
                    (ended.state.value, ended.reason)
                    if ended is not None
                    else (RunState.FAILED.value, str(e.cause or e))
                )
            if inp.metric:
                try:
                    m = await workflow.execute_activity_method(
                        HyperActivityDefs.hyper_metric,
                        HyperMetricInput(
                            run_id=alloc.run_id, metric=inp.metric, agg=inp.metric_agg
                        ),
                        start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=RetryPolicy(maximum_attempts=5),
                    )
                    run.value, run.points = m.value, m.points
                except ActivityError as e:
                    run.reason = run.reason or f"its metric could not be read: {_cause(e)}"
            run.done = True
        finally:
            self.running -= 1


async def _stop_child(child: workflow.ChildWorkflowHandle) -> None:
    try:
        await child.signal(RunWorkflow.stop)
    except Exception:  # the run ended meanwhile
        pass


def _cause(e: BaseException) -> str:
    while isinstance(e, ActivityError) and e.cause is not None:
        e = e.cause
    return getattr(e, "message", None) or str(e)
