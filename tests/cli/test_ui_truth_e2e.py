"""The Temporal Web UI tells the truth, against the real stack (Temporal dev server,
control worker, a local machine, Docker): a run that ends other than Complete closes
as a failed workflow, and a run workflow terminated from outside (what the Web UI's
Terminate button does) gives its machine back, its container stopped, and shows as
Terminated."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import docker
from temporalio.client import WorkflowExecutionStatus

from conjure import AsyncConjure, AsyncRun
from conjure.activities.machine import RUN_LABEL
from conjure.infra.config import Settings, get_settings
from conjure.workflows import keys
from conjure.workflows.models import RunState
from conjure.workflows.pool import PoolWorkflow
from tests.cli.test_run_e2e import run_id_of
from tests.conftest import conjure


def api() -> AsyncConjure:
    return AsyncConjure(get_settings(), autostart=False)


async def eventually(what: str, check, timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"never: {what}")


async def test_final_state_visible_as_workflow_status(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    c = api()
    client = await c.client()
    ok = conjure("run", "true", cwd=tmp_path)
    bad = conjure("run", "exit 3", cwd=tmp_path)
    assert ok.code == 0 and bad.code == 3, bad
    n_ok, n_bad = run_id_of(ok.err), run_id_of(bad.err)
    good = await client.get_workflow_handle(keys.run_workflow_id(n_ok)).describe()
    assert good.status == WorkflowExecutionStatus.COMPLETED
    failed = await client.get_workflow_handle(keys.run_workflow_id(n_bad)).describe()
    assert failed.status == WorkflowExecutionStatus.FAILED
    # The status and the wait still read the run's own final status.
    st = await AsyncRun(c, n_bad).wait()
    assert st.state == RunState.FAILED and st.exit_code == 3 and st.reason == "exit code 3"
    assert json.loads(conjure("status", str(n_bad), "--json").out)["state"] == "Failed"


async def test_terminated_run_workflow_ends_cleanly(
    conjure_stack: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    r = conjure("run", "--background", "echo started; sleep 600", cwd=tmp_path)
    assert r.code == 0, r
    n = int(r.out.strip())
    c = api()
    run = AsyncRun(c, n)
    await eventually("the run is running", lambda: _in_state(run, RunState.RUNNING))
    wid = keys.run_workflow_id(n)
    client = await c.client()
    pool = client.get_workflow_handle(keys.POOL_WORKFLOW_ID)
    machine = next(
        m for m in (await pool.query(PoolWorkflow.view)).machines if m.run_workflow_id == wid
    )

    await client.get_workflow_handle(wid).terminate(reason="terminated from the Web UI")

    async def given_back() -> bool:
        view = await pool.query(PoolWorkflow.view)
        m = next((x for x in view.machines if x.id == machine.id), None)
        return m is None or m.run_workflow_id != wid

    await eventually("the pool takes the machine back", given_back)

    async def container_gone() -> bool:
        return not docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={n}"})

    await eventually("the run's container is removed", container_gone)
    st = await run.status()
    assert st.state == RunState.TERMINATED and "terminated" in st.reason, st
    listed = json.loads(conjure("ls", "--json").out)
    assert next(x for x in listed if x["id"] == n)["state"] == "Terminated"
    # Filtered by state, it is Terminated too, not the Running its workflow last said.
    assert n not in listed_ids("--state", "Running")
    assert n in listed_ids("--state", "Terminated")
    stop = conjure("stop", str(n))
    assert stop.code == 1 and f"run {n} is already Terminated" in stop.err, stop
    # The machine serves the next run.
    nxt = conjure("run", "echo next", cwd=tmp_path)
    assert nxt.code == 0 and nxt.out == "next\n", nxt


def listed_ids(*args: str) -> list[int]:
    r = conjure("ls", "--json", *args)
    assert r.code == 0, r
    return [x["id"] for x in json.loads(r.out)]


async def _in_state(run: AsyncRun, state: RunState) -> bool:
    return (await run.status()).state == state


async def test_run_workflow_reset_to_its_start_runs_again(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    """The Web UI's Reset to the first workflow task: the run starts over on the machine it
    held (the reaper grants that lease again) and completes."""
    import uuid

    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

    r = conjure("run", "--background", "echo pass; sleep 4; echo done", cwd=tmp_path)
    assert r.code == 0, r
    n = int(r.out.strip())
    c = api()
    run = AsyncRun(c, n)
    await eventually("the run is running", lambda: _in_state(run, RunState.RUNNING))
    client = await c.client()
    wid = keys.run_workflow_id(n)
    history = await client.get_workflow_handle(wid).fetch_history()
    first_task = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=wid),
            reason="reset from the Web UI",
            workflow_task_finish_event_id=first_task,
            request_id=uuid.uuid4().hex,
        )
    )

    async def final() -> bool:
        return (await run.status()).state.final

    await eventually("the reset run ends", final, timeout=240)
    st = await run.status()
    assert st.state == RunState.COMPLETE, st
    assert "done" in conjure("logs", str(n)).out
    pool = client.get_workflow_handle(keys.POOL_WORKFLOW_ID)
    view = await pool.query(PoolWorkflow.view)
    assert not any(m.run_workflow_id == wid for m in view.machines)
