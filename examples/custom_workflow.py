"""Your own Temporal workflow driving Conjure runs: a learning-rate sweep.

Every Conjure run is the workflow `RunWorkflow`, so a workflow of yours can run
runs as child workflows, in parallel, with all of Temporal's durability. Run ids
come from Conjure's counter through the `allocate_run_id` activity, which the
control worker serves on its task queue. The runs are ordinary runs: `conjure ls`,
`conjure logs N`, `conjure status N` show them.

    python examples/custom_workflow.py            # against the configured stack
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows import keys, run_outcome
    from conjure.workflows.models import (
        AllocateInput,
        AllocateResult,
        RunInput,
        RunOptions,
        RunSpec,
        RunState,
        RunStatus,
    )
    from conjure.workflows.run import RunWorkflow


class SweepInput(BaseModel):
    spec: RunSpec  # the run to repeat, built by AsyncConjure.build_spec
    learning_rates: list[str]
    control_task_queue: str = "conjure-control"
    options: RunOptions = RunOptions()


@workflow.defn
class Sweep:
    @workflow.run
    async def run(self, inp: SweepInput) -> list[RunStatus]:
        async def one(lr: str) -> RunStatus:
            alloc = await workflow.execute_activity(
                "allocate_run_id",
                AllocateInput(request_id=f"{workflow.info().workflow_id}/{lr}"),
                result_type=AllocateResult,
                task_queue=inp.control_task_queue,
                start_to_close_timeout=timedelta(seconds=30),
            )
            spec = inp.spec.model_copy(update={"env": {**inp.spec.env, "LR": lr}})
            # A run that ends other than Complete fails its workflow (so the Web UI shows
            # it): its final status is the failure's detail.
            try:
                return await workflow.execute_child_workflow(
                    RunWorkflow.run,
                    RunInput(run_id=alloc.run_id, spec=spec, options=inp.options),
                    id=keys.run_workflow_id(alloc.run_id),
                    task_queue=inp.control_task_queue,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(keys.RUN_ID, alloc.run_id),
                            SearchAttributePair(keys.STATE, RunState.REQUESTED.value),
                            SearchAttributePair(keys.MACHINE_TYPE, spec.machine_type.name),
                            SearchAttributePair(keys.COMMAND, spec.command),
                        ]
                    ),
                )
            except ChildWorkflowError as e:
                ended = run_outcome.status_of(e)
                if ended is None:
                    raise
                return ended

        return list(await asyncio.gather(*(one(lr) for lr in inp.learning_rates)))


async def main() -> None:
    from temporalio.worker import Worker

    from conjure import AsyncConjure

    c = AsyncConjure()
    client = await c.client()
    await c.ensure_pool()
    spec = await c.build_spec('echo "training with lr=$LR"')
    queue = f"sweep-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[Sweep]):
        results = await client.execute_workflow(
            Sweep.run,
            SweepInput(
                spec=spec,
                learning_rates=["0.1", "0.01"],
                control_task_queue=c.settings.control_task_queue,
                options=c.run_options(),
            ),
            id=queue,
            task_queue=queue,
        )
    for st in results:
        print(f"run {st.run_id} LR={st.spec.env['LR']} {st.state.value}")


if __name__ == "__main__":
    from conjure import exit_process

    asyncio.run(main())
    exit_process(0)  # skips interpreter teardown, which the SDK's Rust threads can abort
