"""The hyperparameter search workflow on Temporal's time-skipping test server: every
grid combination runs, at most `parallel` at once, and the runs are ranked by the
metric; `stop` stops the running runs and starts no new one; a seeded random search
draws the same values again.

The search workflow is the real one. Its runs are a stand-in `RunWorkflow`
(tests/workflows/hyper_stub.py) and its control activities small fakes: this test is
about the search's scheduling and ranking; real runs and the real metric path are
tested end to end in tests/cli/test_hyper_e2e.py."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conjure.workflows import keys
from conjure.workflows.hyper import HyperWorkflow
from conjure.workflows.hyper_models import (
    HyperInput,
    HyperMetricInput,
    HyperMetricResult,
    HyperState,
    HyperStatus,
    parse_param,
)
from conjure.workflows.models import AllocateInput, AllocateResult, MachineType, RunInput, RunSpec
from tests.workflows.hyper_stub import StubRunWorkflow

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
CPU = MachineType(name="cpu", vcpus=1, memory_gb=1)


class Fakes:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.commands: dict[int, str] = {}
        self.active = 0
        self.most_active = 0

    @activity.defn(name="allocate_run_id")
    async def allocate_run_id(self, inp: AllocateInput) -> AllocateResult:
        run_id = self.ids.setdefault(inp.request_id, 100 + len(self.ids))
        return AllocateResult(run_id=run_id)

    @activity.defn(name="stub_started")
    async def stub_started(self, inp: RunInput) -> None:
        self.commands[inp.run_id] = inp.spec.command
        self.active += 1
        self.most_active = max(self.most_active, self.active)

    @activity.defn(name="stub_ended")
    async def stub_ended(self, run_id: int) -> None:
        self.active -= 1

    @activity.defn(name="hyper_metric")
    async def hyper_metric(self, inp: HyperMetricInput) -> HyperMetricResult:
        # "score A B SECONDS": the metric is A * B
        _, a, b, _ = self.commands[inp.run_id].split()
        return HyperMetricResult(value=float(a) * float(b), points=3)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    e = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    # The runs start with Conjure's search attributes, which the server must know (a
    # child with unknown ones is never started).
    await e.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=e.client.namespace,
            search_attributes={
                name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
                for name, kind in keys.SEARCH_ATTRIBUTES.items()
            },
        )
    )
    yield e
    await e.shutdown()


def search(kind: str, params: list[str], command: str, **kw: object) -> HyperInput:
    return HyperInput(
        hyper_id=1,
        kind=kind,
        params=[parse_param(p) for p in params],
        spec=RunSpec(command=command, machine_type=CPU),
        metric="acc",
        metric_agg="max",
        **kw,  # type: ignore[arg-type]
    )


async def start(client: Client, inp: HyperInput, fakes: Fakes) -> tuple[Worker, object]:
    queue = f"hyper-{uuid.uuid4().hex}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[HyperWorkflow, StubRunWorkflow],
        activities=[fakes.allocate_run_id, fakes.stub_started, fakes.stub_ended,
                    fakes.hyper_metric],
    )  # fmt: skip
    handle = await client.start_workflow(
        HyperWorkflow.run, inp, id=f"hyper-{uuid.uuid4().hex}", task_queue=queue
    )
    return worker, handle


async def test_grid_runs_every_combination_under_the_limit_and_ranks(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    inp = search("grid", ["a=1,3,2", "b=10,20"], "score :a: :b: 600", parallel=2)
    worker, handle = await start(env.client, inp, fakes)
    async with worker:
        st: HyperStatus = await handle.result()  # type: ignore[attr-defined]
    assert st.state == HyperState.COMPLETE, st
    assert sorted(fakes.commands.values()) == sorted(
        f"score {a} {b} 600" for a in (1, 3, 2) for b in (10, 20)
    )
    assert fakes.most_active == 2  # two at once, never more
    ranked = st.ranked()
    assert [(r.params["a"], r.params["b"]) for r in ranked] == [
        ("3", "20"), ("2", "20"), ("3", "10"), ("1", "20"), ("2", "10"), ("1", "10"),
    ]  # fmt: skip
    assert [r.value for r in ranked][:2] == [60.0, 40.0]
    assert all(r.state == "Complete" and r.done and r.points == 3 for r in st.runs)
    assert st.best is not None and st.best.run_id == ranked[0].run_id
    assert "best: run" in st.reason and "acc = 60" in st.reason


async def test_stop_stops_running_runs_and_starts_no_more(env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    inp = search("random", ["a=1:5", "b=1,2"], "score :a: :b: 3600", num_runs=6, parallel=2,
                 seed=11)  # fmt: skip
    worker, handle = await start(env.client, inp, fakes)
    async with worker:
        for _ in range(200):
            st = await handle.query(HyperWorkflow.status)  # type: ignore[attr-defined]
            if fakes.active == 2:
                break
            await asyncio.sleep(0.05)
        assert fakes.active == 2
        await handle.signal(HyperWorkflow.stop)  # type: ignore[attr-defined]
        st = await handle.result()  # type: ignore[attr-defined]
    assert st.state == HyperState.STOPPED
    states = [r.state for r in st.runs]
    assert states.count("Stopped") == 2 and states.count("Not started") == 4, states
    assert len(fakes.commands) == 2

    # The same seed draws the same values again.
    again = Fakes()
    worker, handle = await start(env.client, inp.model_copy(update={"parallel": 6}), again)
    async with worker:
        for _ in range(200):
            if again.active == 6:
                break
            await asyncio.sleep(0.05)
        await handle.signal(HyperWorkflow.stop)  # type: ignore[attr-defined]
        st2 = await handle.result()  # type: ignore[attr-defined]
    assert [r.params for r in st2.runs] == [r.params for r in st.runs]
    assert len({r.params["a"] for r in st2.runs}) == 6


async def test_bayes_asks_optuna_for_each_run(env: WorkflowEnvironment) -> None:
    """The real `hyper_suggest` activity (Optuna) chooses each run's values from the
    results so far; the runs and their metric are the stand-ins."""
    from conjure.activities.hyper import HyperActivities
    from conjure.infra.config import Settings

    fakes = Fakes()
    inp = search("bayes", ["a=1:9", "b=1,2"], "score :a: :b: 60", num_runs=4, parallel=2,
                 seed=5)  # fmt: skip
    queue = f"hyper-{uuid.uuid4().hex}"
    executor = ThreadPoolExecutor(max_workers=2)
    worker = Worker(
        env.client,
        task_queue=queue,
        workflows=[HyperWorkflow, StubRunWorkflow],
        activities=[fakes.allocate_run_id, fakes.stub_started, fakes.stub_ended,
                    fakes.hyper_metric, HyperActivities(Settings()).hyper_suggest],
        activity_executor=executor,
    )  # fmt: skip
    async with worker:
        st = await env.client.execute_workflow(
            HyperWorkflow.run, inp, id=f"hyper-{uuid.uuid4().hex}", task_queue=queue
        )
    assert st.state == HyperState.COMPLETE, st
    assert len(st.runs) == 4 and fakes.most_active == 2
    for r in st.runs:
        assert 1 <= float(r.params["a"]) <= 9 and r.params["b"] in ("1", "2")
        assert r.value == float(r.params["a"]) * float(r.params["b"])
    assert st.best is not None and st.best.value == max(r.value or 0 for r in st.runs)
