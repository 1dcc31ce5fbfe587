"""Record the histories that tests/workflows/test_replay.py replays.

Run against a live stack after a deliberate change to a workflow (one that old
histories need not replay, else use `workflow.patched`):

    CONJURE_HOME=/tmp/rec .venv/bin/python -m tests.workflows.record_histories

or record only some groups, leaving the other committed histories as they are:

    CONJURE_HOME=/tmp/rec .venv/bin/python -m tests.workflows.record_histories hyper resume

(`ui`: a run that closes as a failed workflow, and a run workflow terminated from
outside and reaped; `release`: a complete and a killed run that give their machine back
while the workspace is cleaned; `final`: a killed and a stopped run that are final before
their clean-up, each answering a waiting `final_status` update.)
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from conjure import AsyncConjure, AsyncRun
from conjure.cli.pipelines import Step, run_pipeline
from conjure.workflows import keys
from conjure.workflows.stop_conditions import child_workflow_id

HERE = Path(__file__).with_name("histories")


async def killed_run(c: AsyncConjure, cwd: Path) -> AsyncRun:
    """A `sleep 60` killed once it runs, after it ended."""
    killed = await c.run("sleep 60", cwd=cwd)
    while (await killed.status()).state.value != "Running":
        await asyncio.sleep(0.2)
    await killed.kill()
    await killed.wait()
    return killed


async def run_control_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    """A run stopped by its stop condition (and that condition's child workflow), and
    a killed run."""
    script = (
        'python3 -c "import time; from conjure_metrics import send_metric; '
        "[send_metric('acc', v) or time.sleep(0.3) for v in (0.9, 0.4, 0.8)]; time.sleep(60)\""
    )
    stopped = await c.run(script, cwd=cwd, stop_conditions=["acc < 0.5 : 2"])
    await stopped.wait()
    killed = await killed_run(c, cwd)
    return [
        ("run_stopped_by_condition", keys.run_workflow_id(stopped.id)),
        ("stop_conditions", child_workflow_id(stopped.id)),
        ("run_killed", keys.run_workflow_id(killed.id)),
        ("pool_with_health_check", keys.POOL_WORKFLOW_ID),
    ]


async def release_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    """A complete and a killed run whose machine goes back to the pool while the
    workspace is cleaned (workflow.patched("run-release-with-cleanup"))."""
    complete = await c.run("echo hi", cwd=cwd)
    await complete.wait()
    killed = await killed_run(c, cwd)
    return [
        ("run_complete_release_with_cleanup", keys.run_workflow_id(complete.id)),
        ("run_killed_release_with_cleanup", keys.run_workflow_id(killed.id)),
    ]


async def final_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    """A killed and a stopped run, final before the workspace is cleaned and the machine
    given back (workflow.patched("run-final-before-cleanup")), each answering the
    `final_status` update that `conjure kill/stop --wait` sends."""
    out = []
    for verb, final in (("kill", "Killed"), ("stop", "Stopped")):
        run = await c.run("trap 'exit 0' TERM; sleep 60 & wait", cwd=cwd)
        while (await run.status()).state.value != "Running":
            await asyncio.sleep(0.2)
        await (run.kill() if verb == "kill" else run.stop())
        st = await run.wait_final()
        assert st.state.value == final, st
        await run.wait()
        out.append((f"run_{final.lower()}_final_before_cleanup", keys.run_workflow_id(run.id)))
    return out


HYPER_TRAIN = """\
import sys
from conjure_metrics import send_metric
for epoch in (1, 2, 3):
    send_metric("val_acc", float(sys.argv[1]) * epoch / 3, step=epoch)
"""


async def hyper_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    """A grid search of two runs ranked by the metric they log."""
    from conjure.cli.hyper import start_hyper

    cwd = cwd / "hyper"
    cwd.mkdir()
    (cwd / "train.py").write_text(HYPER_TRAIN)
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "train"]):
        subprocess.run(["git", "-c", "user.name=r", "-c", "user.email=r@r", *args], cwd=cwd,
                       check=True)  # fmt: skip
    h = await start_hyper(
        c, "grid", "python3 train.py :rate:", {"rate": [0.1, 0.3]}, parallel=1,
        metric="val_acc", metric_agg="max", cwd=cwd,
    )  # fmt: skip
    await h.wait()
    return [("hyper_grid", keys.hyper_workflow_id(h.id))]


async def resume_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    """An --auto-resume run whose machine is reclaimed while it runs: a second attempt.
    (The stack's pool must check machines often: CONJURE_MACHINE_HEALTH_SECONDS=1.)"""
    from conjure.infra.providers import local

    run = await c.run("for i in $(seq 1 30); do echo $i > n.txt; sleep 1; done", cwd=cwd,
                      auto_resume=3)  # fmt: skip
    while (await run.status()).state.value != "Running":
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    machine = (await run.status()).machine_id
    assert machine is not None
    local.reclaim(c.settings, machine)
    await run.wait()
    return [("run_auto_resumed", keys.run_workflow_id(run.id))]


async def save(client, wanted: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    for name, wf_id in wanted:
        history = await client.get_workflow_handle(wf_id).fetch_history()
        (HERE / f"{name}.json").write_text(history.to_json())
        print(f"recorded {name} ({len(history.events)} events)")


async def main() -> None:
    c = AsyncConjure()
    client = await c.client()
    groups = {
        "hyper": hyper_histories,
        "resume": resume_histories,
        "ui": ui_histories,
        "release": release_histories,
        "final": final_histories,
    }
    if sys.argv[1:]:
        for group in sys.argv[1:]:
            with tempfile.TemporaryDirectory() as tmp:
                await save(client, await groups[group](c, Path(tmp)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        first = await c.run("echo hello world! > foo.txt", cwd=Path(tmp))
        await first.wait()
        second = await c.run(
            "cat foo.txt; exit 3", mounts=[f"runs/{first.id}/foo.txt:foo.txt"], cwd=Path(tmp)
        )
        await second.wait()
        pipeline = await run_pipeline(
            c,
            [
                Step("prepare", "mkdir -p data && echo raw > data/x.txt"),
                Step("train", "cat /mnt/data/x.txt", mounts=["{steps.prepare}/data:/mnt/data"]),
                Step("evaluate", "exit 1", depends_on=["prepare"]),
                Step("report", "true", depends_on=["evaluate"]),
            ],
            name="recorded",
            cwd=Path(tmp),
        )
        await pipeline.wait()
        extra = await run_control_histories(c, Path(tmp))
        extra += await hyper_histories(c, Path(tmp))
        extra += await resume_histories(c, Path(tmp))
    await save(
        client,
        extra
        + [
            ("run_complete", keys.run_workflow_id(first.id)),
            ("run_failed_with_mount", keys.run_workflow_id(second.id)),
            ("counter", keys.COUNTER_WORKFLOW_ID),
            ("pool", keys.POOL_WORKFLOW_ID),
            ("pipeline", keys.pipeline_workflow_id(pipeline.id)),
        ],
    )


async def ui_histories(c: AsyncConjure, cwd: Path) -> list[tuple[str, str]]:
    from conjure.workflows.pool import PoolWorkflow
    from conjure.workflows.run_reap import reap_workflow_id

    client = await c.client()
    failed = await c.run("exit 3", cwd=cwd)
    await failed.wait()
    doomed = await c.run("sleep 600", cwd=cwd)
    while (await doomed.status()).state.value != "Running":
        await asyncio.sleep(0.2)
    wid = keys.run_workflow_id(doomed.id)
    await client.get_workflow_handle(wid).terminate(reason="recording")
    pool = client.get_workflow_handle(keys.POOL_WORKFLOW_ID)
    while any(m.run_workflow_id == wid for m in (await pool.query(PoolWorkflow.view)).machines):
        await asyncio.sleep(0.5)
    await client.get_workflow_handle(reap_workflow_id(wid)).result()
    return [
        ("run_failed_closes_failed", keys.run_workflow_id(failed.id)),
        ("run_reap", reap_workflow_id(wid)),
    ]


if __name__ == "__main__":
    asyncio.run(main())
