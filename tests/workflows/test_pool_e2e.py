"""The machine pool on the real embedded stack (Temporal dev server, control worker,
local machines, Docker), sharded in two (`pool_shards = 2`, so the limits are split
and every view merges the shards; the single pool is what every other stack runs):
max_concurrent_runs with 50 runs, queue places in `conjure ls`/`status`, cost,
`conjure machines terminate`, the reconciler against a real orphan and a real dead
agent, and durable idle timers across a restart of the control worker and the
Temporal server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import docker
import pytest

from conjure import AsyncConjure
from conjure.infra import stack
from conjure.infra.config import Settings, get_settings
from conjure.infra.providers import local
from conjure.infra.providers.local import MACHINE_LABEL
from conjure.infra.temporal import make_client
from conjure.workflows import keys
from conjure.workflows.models import MachineState, PoolView
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.pool_shards import machine_shard, merge_views, shard_workflow_ids
from tests.conftest import conjure, running_stack, stack_env

PRICE = 3.6  # $/hour for `cpu` in this stack: a cent per 10 s


@pytest.fixture(scope="module")
def pool_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("pool-home")
    (home / "config.toml").write_text(f"[machine_types.cpu]\nprice_per_hour = {PRICE}\n")
    env = stack_env(
        home,
        CONJURE_MAX_CONCURRENT_RUNS="4",  # 2 per shard
        CONJURE_POOL_SHARDS="2",
        CONJURE_IDLE_TIMEOUT_SECONDS="600",
        CONJURE_RECONCILE_INTERVAL_SECONDS="2",
        CONJURE_AGENT_TIMEOUT_SECONDS="3",
    )
    with running_stack(env) as settings:
        yield settings


async def view(settings: Settings) -> PoolView:
    """Both shards' views straight from Temporal (no `ensure_up`, which restarts agents)."""
    client = await make_client(settings)
    ids = shard_workflow_ids(settings.pool_shards)
    assert ids == [keys.POOL_WORKFLOW_ID, f"{keys.POOL_WORKFLOW_ID}-1"]
    views = [await client.get_workflow_handle(i).query(PoolWorkflow.view) for i in ids]
    assert [v.config.max_concurrent_runs for v in views] == [2, 2]
    return merge_views(views)


def overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = cur = 0
    for _, d in events:
        cur += d
        most = max(most, cur)
    return most


async def test_fifty_runs_never_more_than_four_at_once_over_two_shards(
    pool_stack: Settings, tmp_path: Path
) -> None:
    c = AsyncConjure(pool_stack)
    runs = []
    for _ in range(50):
        runs.append(await c.run("sleep 0.2", cwd=tmp_path))

    # Places in the queue, as `conjure ls` and `conjure status` show them.
    # Places in the queue, as `conjure ls` and `conjure status` show them: each run's
    # place in its shard's queue (run id mod 2).
    ls = json.loads(conjure("ls", "--json", "-n", "60").out)
    places = sorted(r["queue_position"] for r in ls if r["queue_position"])
    for k in (0, 1):
        mine = sorted(r["queue_position"] for r in ls if r["queue_position"] and r["id"] % 2 == k)
        assert mine and mine == list(range(1, len(mine) + 1)), ls
    last = runs[-1].id
    st = conjure("status", str(last), "--json")
    assert 1 <= json.loads(st.out)["queue_position"] <= max(places), st  # the queue moves on
    human = conjure("status", str(last))
    assert "queue:        #" in human.out and "run(s) ahead" in human.out, human
    table = conjure("ls", "-n", "60")
    assert "Requested #" in table.out, table

    most_active = 0
    statuses = []
    pending = list(runs)
    deadline = time.monotonic() + 400
    while pending and time.monotonic() < deadline:
        v = await view(pool_stack)
        active = [
            m for m in v.machines if m.run_workflow_id and m.state != MachineState.TERMINATING
        ]
        most_active = max(most_active, len(active))
        assert len(active) <= 4, v
        still = []
        for r in pending:
            s = await r.status()
            if s.state.final:
                statuses.append(s)
            else:
                still.append(r)
        pending = still
        await asyncio.sleep(0.5)
    assert not pending, f"{len(pending)} runs unfinished"
    assert most_active == 4
    assert {s.state.value for s in statuses} == {"Complete"}

    spans = []
    for s in statuses:
        at = {ch.state.value: ch.at for ch in s.timeline}
        spans.append((at["Building"], at["Pushing"]))
    assert overlap(spans) <= 4

    v = await view(pool_stack)
    assert 2 <= len(v.machines) <= 4 and not v.queue
    assert {machine_shard(m.id) for m in v.machines} == {0, 1}  # both shards served runs
    assert all(m.state == MachineState.IDLE for m in v.machines)
    assert sum(m.runs_served for m in v.machines) == 50
    assert sorted(r.machine_id for r in local.list_instances(pool_stack)) == sorted(
        m.id for m in v.machines
    )
    ids = {m.id for m in v.machines}
    left = [
        ct for ct in docker.from_env().containers.list(all=True)
        if ct.labels.get(MACHINE_LABEL) in ids
    ]  # fmt: skip
    assert left == []

    # Cost: price x time on the machine, in status and ls alike.
    s = statuses[0]
    expect = PRICE * (s.released_at - s.leased_at).total_seconds() / 3600
    assert s.cost == pytest.approx(expect) and s.cost > 0
    row = next(
        r for r in json.loads(conjure("ls", "--json", "-n", "60").out) if r["id"] == s.run_id
    )
    assert row["cost"] == pytest.approx(expect)
    assert json.loads(conjure("status", str(s.run_id), "--json").out)["cost"] == pytest.approx(
        expect
    )
    assert "cost:" in conjure("status", str(s.run_id)).out
    machines = json.loads(conjure("machines", "--json").out)
    assert all(m["cost"] > 0 for m in machines)


async def test_machines_terminate(pool_stack: Settings, tmp_path: Path) -> None:
    c = AsyncConjure(pool_stack)
    run = await c.run("sleep 4", cwd=tmp_path)
    for _ in range(200):
        st = await run.status()
        if st.state.value == "Running":
            break
        await asyncio.sleep(0.1)
    mid = st.machine_id
    r = conjure("machines", "terminate", mid)
    assert r.code == 0 and "after its run" in r.err, r
    await run.wait()
    assert (await run.status()).state.value == "Complete"  # the run was left to finish
    for _ in range(100):
        if mid not in {m.id for m in (await view(pool_stack)).machines}:
            break
        await asyncio.sleep(0.1)
    assert mid not in {m.id for m in (await view(pool_stack)).machines}
    assert mid not in {r.machine_id for r in local.list_instances(pool_stack)}

    await (await c.run("true", cwd=tmp_path)).wait()
    idle = next(m.id for m in (await view(pool_stack)).machines if m.state == MachineState.IDLE)
    r = conjure("machines", "terminate", idle)
    assert r.code == 0 and "is terminating" in r.err, r

    r = conjure("machines", "terminate", "local-nosuchmachine")
    assert r.code == 1 and "not in the pool" in r.err and "Traceback" not in r.err, r
    assert len(r.err.strip().splitlines()) == 1


async def test_reconciler_reaps_orphan_and_dead_agent(pool_stack: Settings, tmp_path: Path) -> None:
    c = AsyncConjure(pool_stack)
    await (await c.run("true", cwd=tmp_path)).wait()
    before = await view(pool_stack)
    victim = next(m for m in before.machines if m.state == MachineState.IDLE)

    orphan = local.provision(pool_stack, "local-orphan0001", c.machine_type("cpu"))
    assert local.pid_alive(local.agent_pid(orphan))
    os.kill(
        local.agent_pid(local.describe(pool_stack, victim.id)), signal.SIGKILL
    )  # the agent dies

    unresponsive = before.unresponsive_terminated
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        v = await view(pool_stack)
        ids = {m.id for m in v.machines}
        if victim.id not in ids and v.orphans_terminated >= 1:
            break
        await asyncio.sleep(0.2)
    seen = _pool_story(pool_stack, v)
    assert victim.id not in ids, seen
    assert v.unresponsive_terminated > unresponsive and v.orphans_terminated >= 1, seen
    for _ in range(100):
        if local.describe(pool_stack, "local-orphan0001") is None:
            break
        await asyncio.sleep(0.1)
    assert local.describe(pool_stack, "local-orphan0001") is None
    assert not local.pid_alive(local.agent_pid(orphan))
    assert local.describe(pool_stack, victim.id) is None


async def test_idle_timer_survives_restart_of_worker_and_server(
    pool_stack: Settings, tmp_path: Path
) -> None:
    c = AsyncConjure(pool_stack)
    await (await c.run("true", cwd=tmp_path)).wait()
    # A changed setting reaches the running pool (the client sends what it was given).
    # (A patient agent check, so only the idle timers end these machines.)
    changed = {"CONJURE_IDLE_TIMEOUT_SECONDS": "25", "CONJURE_AGENT_TIMEOUT_SECONDS": "60"}
    r = conjure("machines", env=changed)
    assert r.code == 0, r
    v = await view(pool_stack)
    assert v.config.idle_timeout_seconds == 25 and v.config.agent_timeout_seconds == 60
    silent_before = v.unresponsive_terminated
    idle = {m.id: m.idle_since for m in v.machines if m.state == MachineState.IDLE}
    assert idle

    os.environ.update(changed)  # the restarted worker agrees
    settings = get_settings()
    stack.down(settings)
    assert not stack.is_up(settings)
    await stack.up(settings)
    v = await view(settings)
    assert {m.id: m.idle_since for m in v.machines if m.id in idle} == idle  # state kept

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(m.id in idle for m in v.machines):
        await asyncio.sleep(0.5)
        v = await view(settings)
    assert not any(m.id in idle for m in v.machines), v  # the durable timers fired
    assert time.time() >= max(idle.values()).timestamp() + 25 - 1  # not before their time
    assert v.unresponsive_terminated == silent_before
    assert not {r.machine_id for r in local.list_instances(settings)} & set(idle)


def _pool_story(settings: Settings, v: PoolView) -> str:
    """What a failed reconciler test saw: each machine, the last round, the worker's log."""
    lines = [f"{m.id} {m.state.value} ended={m.ended} reason={m.reason!r}" for m in v.machines]
    lines.append(f"last_reconcile={v.last_reconcile} orphans={v.orphans_terminated}")
    lines.append(f"unresponsive={v.unresponsive_terminated}")
    log = settings.run_dir / "worker.log"
    if log.exists():
        lines += log.read_text(errors="replace").splitlines()[-40:]
    return "\n".join(lines)
