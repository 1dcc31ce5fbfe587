"""Leases the pool grants per second with many runs queued, with 1, 2 and 4 pool shards.

    .venv/bin/python bench/lease_rate.py [--queued 1000] [--machines 64] [--shards 1,2,4]

Runs the real PoolWorkflow in a worker inside this process, on the Temporal server of
a throw-away stack, with MACHINES idle machines already in its state (no provider
work), and QUEUED probe workflows that do what a run does with its lease: signal
`request_lease`, wait for `lease_granted`, signal `release`. The pool starts held
(one busy machine and max_concurrent_runs = 1), so every probe is queued before the
clock starts; then the hold is lifted and the figure is QUEUED / (last grant - lift).

With N shards there are N pool workflows (`pool_shards = N`: the ids, configs and
machine ids of workflows/pool_shards.py), each owning MACHINES/N machines, and probe
i asks the shard `pool_for_run(i, ...)` names, as a run with id i would. The probes
stand in for runs (a real run also prepares a workspace, runs a container and saves
outputs on a machine, which is not what this measures); the pools are the real ones.

Baseline, same run: an echo workflow that does only the message pattern (grant while
fewer than MACHINES leases are out, take releases back) with no pool bookkeeping,
so the ratio is the share of Temporal's own signal round trip rate the pool reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from common import TEMPORAL, Row, free_port, markdown
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError
from temporalio.worker import Worker

from conjure.workflows.models import (
    Lease,
    LeaseRequest,
    Machine,
    MachineState,
    MachineType,
    PoolConfig,
    PoolConfigure,
    PoolInput,
    PoolState,
    ReleaseRequest,
)
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.pool_shards import (
    new_machine_id,
    pool_for_run,
    shard_config,
    shard_workflow_ids,
)

TYPE = MachineType(name="bench", vcpus=1, memory_gb=1)
BLOCKER = "bench-blocker"


class ProbeInput(BaseModel):
    pool_id: str
    n: int


@workflow.defn(name="BenchLeaseProbe")
class LeaseProbe:
    def __init__(self) -> None:
        self.lease: Lease | None = None

    @workflow.signal
    def lease_granted(self, lease: Lease) -> None:
        self.lease = lease

    @workflow.run
    async def run(self, inp: ProbeInput) -> float:
        me = workflow.info().workflow_id
        pool = workflow.get_external_workflow_handle(inp.pool_id)
        await pool.signal(
            "request_lease", LeaseRequest(run_workflow_id=me, run_id=inp.n, machine_type=TYPE)
        )
        await workflow.wait_condition(lambda: self.lease is not None)
        granted = workflow.now().timestamp()
        assert self.lease is not None
        await pool.signal(
            "release", ReleaseRequest(machine_id=self.lease.machine_id, run_workflow_id=me)
        )
        return granted


class EchoInput(BaseModel):
    slots: int


@workflow.defn(name="BenchLeaseEcho")
class LeaseEcho:
    """The floor: the pool's message pattern with nothing else."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.out = 0
        self.go = False

    @workflow.signal
    def request_lease(self, req: LeaseRequest) -> None:
        self.queue.append(req.run_workflow_id)

    @workflow.signal
    def release(self, req: ReleaseRequest) -> None:
        self.out -= 1

    @workflow.signal
    def start(self) -> None:
        self.go = True

    @workflow.query
    def queued(self) -> int:
        return len(self.queue)

    @workflow.run
    async def run(self, inp: EchoInput) -> None:
        while True:
            await workflow.wait_condition(
                lambda: self.go and bool(self.queue) and self.out < inp.slots
            )
            while self.queue and self.out < inp.slots:
                wid = self.queue.popleft()
                self.out += 1
                lease = Lease(machine_id="m", task_queue="q", machine_type="bench",
                              provider="bench", reused=True)  # fmt: skip
                asyncio.create_task(
                    workflow.get_external_workflow_handle(wid).signal("lease_granted", lease)
                )


def held_pool(machines: int, k: int, shards: int) -> PoolInput:
    """Shard k of `shards`, with its machines idle and one blocker holding its only slot."""
    now = datetime.now(timezone.utc)
    ids = [new_machine_id("bench", k, f"{i:010x}") for i in range(machines)]
    ms = {
        i: Machine(
            id=i,
            machine_type="bench",
            provider="bench",
            task_queue="nobody",
            state=MachineState.IDLE,
            created=now,
            idle_since=now,
        )  # fmt: skip
        for i in ids
    }
    ms[BLOCKER] = Machine(id=BLOCKER, machine_type="bench", provider="bench",
                          task_queue="nobody", state=MachineState.BUSY, created=now,
                          run_workflow_id=BLOCKER)  # fmt: skip
    config = PoolConfig(provider="bench", idle_timeout_seconds=10**7, max_concurrent_runs=0,
                        health_check_seconds=0, reconcile_interval_seconds=0,
                        max_machines={"bench": machines * shards + shards})  # fmt: skip
    config = shard_config(config, k, shards, "run").model_copy(
        update={"max_concurrent_runs": 1}  # held: the blocker has the slot
    )
    return PoolInput(config=config, state=PoolState(machines=ms))


async def one_rate(
    client, queue: str, queued: int, machines: int, shards: int, echo: bool
) -> float:  # type: ignore[no-untyped-def]
    base = f"bench-pool-{uuid.uuid4().hex[:6]}"
    tag = base.removeprefix("bench-pool-")
    pools = []
    for k, pid in enumerate(shard_workflow_ids(shards, base)):
        if echo:
            h = await client.start_workflow(LeaseEcho.run, EchoInput(slots=machines // shards),
                                            id=pid, task_queue=queue)  # fmt: skip
        else:
            h = await client.start_workflow(PoolWorkflow.run,
                                            held_pool(machines // shards, k, shards),
                                            id=pid, task_queue=queue)  # fmt: skip
        pools.append(h)
    sem = asyncio.Semaphore(16)

    async def probe(i: int):  # type: ignore[no-untyped-def]
        async with sem:
            return await client.start_workflow(
                LeaseProbe.run,
                ProbeInput(pool_id=pool_for_run(i, "bench", shards, "run", base), n=i),
                id=f"bench-probe-{tag}-{i}", task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )  # fmt: skip

    probes = await asyncio.gather(*(probe(i) for i in range(queued)))
    # Every probe queued before the clock starts.
    for h in pools:
        want = sum(
            1 for i in range(queued) if pool_for_run(i, "bench", shards, "run", base) == h.id
        )
        while True:
            try:
                n = (
                    await h.query(LeaseEcho.queued)
                    if echo
                    else len((await h.query(PoolWorkflow.view)).queue)
                )
            except RPCError:  # the worker is busy with the probes' own tasks: ask again
                n = -1
            if n >= want:
                break
            await asyncio.sleep(0.5)
    t0 = time.time()
    for h in pools:
        if echo:
            await h.signal(LeaseEcho.start)
        else:
            await h.signal(PoolWorkflow.configure, PoolConfigure(
                config=PoolConfig(max_concurrent_runs=0), fields=["max_concurrent_runs"]))  # fmt: skip
            await h.signal(PoolWorkflow.release,
                           ReleaseRequest(machine_id="bench-blocker", run_workflow_id=BLOCKER))  # fmt: skip
    grants = await asyncio.gather(*(p.result() for p in probes))
    rate = queued / (max(grants) - t0)
    for h in pools:
        await h.terminate("benchmark done")
    return rate


@contextmanager
def process(cmd: list[str], **kw: object) -> Iterator[None]:
    """A process of this benchmark's, ended (SIGTERM, then SIGKILL) on the way out."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def memory_server() -> Iterator[str]:
    """A Temporal dev server of its own, its database in memory: the figure is the
    workflows' and the worker's cost, not this machine's disk (a production cluster
    has its own database servers)."""
    port = free_port()
    with process(
        [TEMPORAL, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--ui-port", str(free_port()), "--headless", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ):  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"


async def _connect(address: str):  # type: ignore[no-untyped-def]
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    for _ in range(100):
        try:
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            await client.service_client.check_health()
            return client
        except Exception:  # not up yet
            await asyncio.sleep(0.3)
    raise RuntimeError(f"no Temporal server at {address}")


async def _serve(address: str, queue: str, cached: int) -> None:
    """The worker: its own process, as a control worker is, so the clock-watching
    client does not take the GIL from the workflows (the SDK's deadlock detector
    fires on a starved workflow task)."""
    from temporalio.worker import UnsandboxedWorkflowRunner

    client = await _connect(address)
    worker = Worker(client, task_queue=queue, workflows=[PoolWorkflow, LeaseProbe, LeaseEcho],
                    workflow_runner=UnsandboxedWorkflowRunner(),
                    max_cached_workflows=cached)  # fmt: skip
    await worker.run()


async def _measure(
    address: str, queue: str, queued: int, machines: int, shard_counts: list[int], repeats: int
) -> list[Row]:
    client = await _connect(address)
    rows = []
    for shards in shard_counts:
        ours, base = [], []
        for _ in range(repeats):
            base.append(await one_rate(client, queue, queued, machines, shards, echo=True))
            ours.append(await one_rate(client, queue, queued, machines, shards, echo=False))
            print(f"lease_rate: {shards} shard(s): pool {ours[-1]:.2f}/s, echo {base[-1]:.2f}/s",
                  file=sys.stderr, flush=True)  # fmt: skip
        rows.append(Row(f"leases granted per second, {queued:,} runs queued, {shards} pool "
                        f"shard(s), {machines} machines", "leases/s", ours, base,
                        "echo workflow(s), same signals, no bookkeeping",
                        higher_is_better=True, goal="≥ 50/s"))  # fmt: skip
    return rows


def measure(queued: int, machines: int, shard_counts: list[int], repeats: int) -> list[Row]:
    queue = f"bench-lease-{uuid.uuid4().hex[:6]}"
    with (
        memory_server() as address,
        process([sys.executable, __file__, "--serve", address, queue, str(queued + 100)]),
    ):
        return asyncio.run(_measure(address, queue, queued, machines, shard_counts, repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queued", type=int, default=1000)
    ap.add_argument("--machines", type=int, default=64)
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--serve", nargs=3, metavar=("ADDRESS", "QUEUE", "CACHED"),
                    help=argparse.SUPPRESS)  # fmt: skip
    args = ap.parse_args()
    if args.serve:
        address, queue, cached = args.serve
        asyncio.run(_serve(address, queue, int(cached)))
        return
    shards = [int(s) for s in args.shards.split(",")]
    rows = measure(args.queued, args.machines, shards, args.repeats)
    print(markdown(rows))


if __name__ == "__main__":
    main()
