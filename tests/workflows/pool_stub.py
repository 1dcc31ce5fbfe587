"""A stand-in run workflow for pool tests: asks the pool for a lease, holds it until
told to finish, gives it back. Its own module so the workflow sandbox imports
nothing of pytest."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from conjure.workflows.models import Lease, LeaseRequest, MachineType, ReleaseRequest
    from conjure.workflows.pool import PoolWorkflow


class StubRunInput(BaseModel):
    pool_id: str
    run_id: int
    machine_type: MachineType
    image_hint: str | None = None
    image: str | None = None  # what the release reports as built


@workflow.defn
class StubRun:
    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.failed: str | None = None
        self.done = False

    @workflow.signal
    def lease_granted(self, lease: Lease) -> None:
        self.lease = self.lease or lease

    @workflow.signal
    def lease_failed(self, reason: str) -> None:
        self.failed = reason

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def leased(self) -> Lease | None:
        return self.lease

    @workflow.run
    async def run(self, inp: StubRunInput) -> str:
        pool = workflow.get_external_workflow_handle(inp.pool_id)
        me = workflow.info().workflow_id
        await pool.signal(
            PoolWorkflow.request_lease,
            LeaseRequest(
                run_workflow_id=me,
                run_id=inp.run_id,
                machine_type=inp.machine_type,
                image_hint=inp.image_hint,
            ),
        )
        await workflow.wait_condition(lambda: self.lease is not None or self.failed is not None)
        if self.lease is None:
            return f"failed: {self.failed}"
        await workflow.wait_condition(lambda: self.done)
        await pool.signal(
            PoolWorkflow.release,
            ReleaseRequest(machine_id=self.lease.machine_id, run_workflow_id=me, image=inp.image),
        )
        return self.lease.machine_id
