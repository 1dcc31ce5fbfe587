"""The fault campaign of issue 15, reproduced against the real stack (Temporal dev
server, control worker, local machines on the real Docker engine): SIGKILL of the
control worker while runs wait in Requested, build, run and save, with no worker at
all (a production cluster nothing restarts), of the Temporal server, of an agent
(restarted and not), a log flood, and the concurrency limit under two submitters.

The limit test is the campaign's size: 60 runs under a limit of 4. The flood is scaled
down to 400,000 lines (the campaign: a million) to fit the suite's time on 2 cores.
`bench/faults.py` prints the figures (time to Interrupted, most runs at once, the agent's
memory during a million-line flood, the time `conjure status` takes after the worker's
SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import docker
import pytest

from conjure import AsyncConjure, AsyncRun
from conjure.cli.liveness import recent_pollers
from conjure.infra import stack
from conjure.infra.config import Settings, get_settings
from conjure.infra.logs import LogReader
from conjure.infra.providers import local
from conjure.infra.store import open_store
from conjure.infra.temporal import make_client
from conjure.workflows.models import RunStatus
from tests.conftest import conjure, running_stack, stack_env, submit_from_two

pytestmark = pytest.mark.faults

HEARTBEAT = 8.0
LIMIT = 4


@pytest.fixture(scope="module")
def faults_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("faults-home")
    env = stack_env(
        home,
        CONJURE_IDLE_TIMEOUT_SECONDS="600",
        CONJURE_MAX_CONCURRENT_RUNS=str(LIMIT),
        CONJURE_EXECUTE_HEARTBEAT_SECONDS=str(HEARTBEAT),
        CONJURE_LOG_LINES_PER_WINDOW="1000",
        CONJURE_LOG_WINDOW_SECONDS="1",
    )
    with running_stack(env) as settings:
        yield settings


def api() -> AsyncConjure:
    """No autostart: polling never restarts the worker or an agent behind the test."""
    return AsyncConjure(get_settings(), autostart=False)


def submit(cmd: str, cwd: Path, env: dict[str, str] | None = None) -> int:
    r = conjure("run", "--background", cmd, cwd=cwd, env=env)
    assert r.code == 0, r
    return int(r.out.strip())


async def wait_for(run_id: int, pred, timeout: float = 240) -> RunStatus:  # type: ignore[no-untyped-def]
    run = AsyncRun(api(), run_id)
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        try:
            st = await run.status()
        except Exception:  # the server or the worker is down for a moment
            st = None
        if st is not None and pred(st):
            return st
        await asyncio.sleep(0.3)
    raise AssertionError(f"run {run_id} never got there; last status {st}")


def log_lines(settings: Settings, run_id: int) -> list[str]:
    store = open_store(settings.store, settings)
    return [ln.text for ln in LogReader(store, run_id).poll() if ln.stream in ("o", "e")]


def outputs(settings: Settings, run_id: int) -> list[str]:
    root = settings.home / "store" / "runs" / str(run_id)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def execute_attempts(settings: Settings, run_id: int, name: str = "execute") -> list[int]:
    """The attempts of the run's activity `name` that started, from its history."""
    client = await make_client(settings)
    attempts = []
    scheduled: set[int] = set()
    async for event in client.get_workflow_handle(f"run-{run_id}").fetch_history_events():
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes"):
            if attrs.activity_type.name == name:
                scheduled.add(event.event_id)
        if event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempts.append(started.attempt)
    return attempts


def wait_no_pollers(settings: Settings, timeout: float = 150) -> float:
    """Until the killed worker's last poll is stale on the server; returns the wait."""

    async def go() -> float:
        client = await make_client(settings)
        start = time.monotonic()
        while await recent_pollers(client, settings.control_task_queue):
            assert time.monotonic() - start < timeout, "the dead worker still looks alive"
            await asyncio.sleep(2)
        return time.monotonic() - start

    return asyncio.run(go())


async def _pollers(settings: Settings) -> int:
    return await recent_pollers(await make_client(settings), settings.control_task_queue)


def test_worker_killed_with_runs_requested_and_running(
    faults_stack: Settings, tmp_path: Path
) -> None:
    """SIGKILL of the control worker while LIMIT runs run and one waits in Requested; with
    no worker (nothing restarts it) `status` answers at once from the run's history
    (marked stale while the dead worker's pollers still look alive; exact for a
    finished run), then fails in one line for an open run once they look gone; `ls`
    answers from visibility; after a restart every run completes once, outputs saved
    once."""
    done = submit("echo done > done.txt; exit 3", tmp_path)
    asyncio.run(wait_for(done, lambda s: s.state.final))
    runs = [
        submit(f"sleep 40; echo out-{i} > out.txt; echo line-{i}", tmp_path)
        for i in range(LIMIT + 1)
    ]
    for n in runs[:LIMIT]:
        asyncio.run(wait_for(n, lambda s: s.state.value == "Running"))
    queued = asyncio.run(wait_for(runs[LIMIT], lambda s: s.state.value == "Requested"))
    assert queued.state.value == "Requested"
    stack.kill_for_tests(faults_stack, "worker")
    # A production cluster: a Temporal address is set, so no command restarts a worker.
    production = {"CONJURE_TEMPORAL_ADDRESS": faults_stack.address}
    # At once: the server still counts the dead worker's pollers, the query goes
    # unanswered, and the run's history answers instead. The three calls run side by
    # side: the dead worker's last poll may have begun up to a minute before the kill,
    # so the window can be short on a loaded machine.
    client_pollers = asyncio.run(_pollers(faults_stack))
    with ThreadPoolExecutor(3) as pool:
        st, js, fin = pool.map(
            lambda args: conjure("status", *args, env=production, timeout=60),
            [(str(runs[0]),), ("--json", str(runs[LIMIT])), ("--json", str(done))],
        )
    # The pollers looked alive all along (else this did not test the window).
    assert client_pollers and asyncio.run(_pollers(faults_stack)), "pollers went stale early"
    assert st.code == 0, st
    assert st.out.splitlines()[0] == f"Run {runs[0]}: Running [as last recorded; possibly stale]"
    assert "  command:      sleep 40; echo out-0 > out.txt; echo line-0" in st.out
    assert "Running" in st.out.split("timeline:")[1], st.out
    warn = [ln for ln in st.err.splitlines() if ln.strip()]
    assert len(warn) == 1 and "did not answer within 1.5 s" in warn[0], st
    assert js.code == 0, js
    data = json.loads(js.out)
    assert data["state"] == "Requested" and data["stale"] and data["queue_position"] is None
    assert [c["state"] for c in data["timeline"]] == ["Requested"]
    assert fin.code == 0, fin
    data = json.loads(fin.out)
    assert (data["state"], data["exit_code"], data["stale"]) == ("Failed", 3, ""), data
    assert data["outputs"] == 1
    waited = wait_no_pollers(faults_stack)
    print(f"the dead worker's pollers went stale after {waited:.0f}s")
    fin = conjure("status", str(done), env=production, timeout=60)
    assert fin.code == 0 and fin.out.startswith(f"Run {done}: Failed"), fin
    assert "stale" not in fin.out + fin.err
    t0 = time.monotonic()
    listed = conjure("ls", "--json", env=production, timeout=60)
    print(f"`conjure ls --json` without a worker: {time.monotonic() - t0:.1f}s")
    assert listed.code == 0, listed
    rows = {r["id"]: r for r in json.loads(listed.out)}
    assert rows[runs[LIMIT]]["state"] == "Requested"
    assert rows[runs[LIMIT]]["queue_position_unknown"] is True
    human = conjure("ls", env=production, timeout=60)
    assert human.code == 0 and "Requested #?" in human.out, human
    t0 = time.monotonic()
    st = conjure("status", str(runs[LIMIT]), env=production, timeout=60)
    print(f"`conjure status` without a worker: {time.monotonic() - t0:.1f}s")
    assert st.code == 1, st
    lines = [ln for ln in st.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no control worker is polling conjure-control" in lines[0], st
    assert "Traceback" not in st.err
    # The worker comes back (as `conjure up` starts it): everything goes on.
    up = conjure("up")
    assert up.code == 0, up
    for i, n in enumerate(runs):
        final = asyncio.run(wait_for(n, lambda s: s.state.final))
        assert final.state.value == "Complete", final
        assert log_lines(faults_stack, n) == [f"line-{i}"]
        assert outputs(faults_stack, n) == ["out.txt"]
        assert (
            faults_stack.home / "store" / "runs" / str(n) / "out.txt"
        ).read_text() == f"out-{i}\n"


def _kill_worker_at(settings: Settings) -> datetime:
    at = datetime.now(timezone.utc)
    stack.kill_for_tests(settings, "worker")
    return at


def _state_at(st: RunStatus, when: datetime) -> str:
    """The state the run's timeline says it was in at `when`."""
    before = [c for c in st.timeline if c.at <= when]
    assert before, (when, st.timeline)
    return before[-1].state.value


def test_worker_killed_while_building_and_while_saving(
    faults_stack: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """SIGKILL of the control worker while a run builds its environment (a pip layer no
    cache holds), restarted, and again while the machine saves the run's 1500 outputs:
    the build and the save go on on the machine, each once; after the restarts the run
    completes in the image built, every file saved once with its content, no partial
    file in the store and no build container left behind."""
    files = 1500
    unique = f"six!=0.0.{uuid.uuid4().int % 10**9}"  # a fresh environment, built now
    cmd = (
        "python -c 'import six; print(six.__version__)' && mkdir -p out && "
        f"for i in $(seq 1 {files}); do echo file-$i > out/f$i.txt; done"
    )
    r = conjure("run", "--background", "--pip", unique, cmd, cwd=tmp_path)
    assert r.code == 0, r
    n = int(r.out.strip())
    asyncio.run(wait_for(n, lambda s: s.state.value == "Building", timeout=120))
    killed_building = _kill_worker_at(faults_stack)
    up = conjure("up")
    assert up.code == 0, up
    saved = faults_stack.home / "store" / "runs" / str(n)
    deadline = time.monotonic() + 240
    while not saved.exists():  # the machine's save has begun: its first file is there
        assert time.monotonic() < deadline, "the run never saved"
        time.sleep(0.002)
    killed_saving = _kill_worker_at(faults_stack)
    up = conjure("up")
    assert up.code == 0, up
    final = asyncio.run(wait_for(n, lambda s: s.state.final))
    try:
        assert _state_at(final, killed_building) == "Building", final.timeline
        assert _state_at(final, killed_saving) == "Saving", final.timeline
        assert final.state.value == "Complete", final
        assert final.image_source == "built", final
        for step in ("ensure_environment", "save_outputs"):
            assert asyncio.run(execute_attempts(faults_stack, n, step)) == [1], step
        assert re.fullmatch(r"\d+\.\d+\.\d+", "".join(log_lines(faults_stack, n))), log_lines(
            faults_stack, n
        )
        store = open_store(faults_stack.store, faults_stack)
        build = [ln.text for ln in LogReader(store, n).poll() if ln.phase == "build"]
        pip = [t for t in build if t.startswith("Step ") and "python3 -m pip install" in t]
        assert len(pip) == 1, build  # built once
        made = [m.group(1) for t in build if (m := re.match(r"^\s*---> Running in ([0-9a-f]+)", t))]
        assert made, "no build container seen: the test would prove nothing"
        left = [c for c in made if docker_client.containers.list(all=True, filters={"id": c})]
        assert not left, f"build containers left behind: {left}"
        assert final.outputs == files, final
        got = outputs(faults_stack, n)
        assert got == sorted(f"out/f{i}.txt" for i in range(1, files + 1)), got[:5]
        for i in range(1, files + 1):
            assert (saved / "out" / f"f{i}.txt").read_text() == f"file-{i}\n"
    finally:
        if final.image and final.image_source == "built":
            docker_client.images.remove(final.image, force=True)


def test_temporal_server_killed_mid_run(faults_stack: Settings, tmp_path: Path) -> None:
    n = submit("for i in $(seq 1 12); do echo tick $i; sleep 0.5; done", tmp_path)
    asyncio.run(wait_for(n, lambda s: s.state.value == "Running"))
    stack.kill_for_tests(faults_stack, "temporal")
    time.sleep(2)
    up = conjure("up")  # the server restarts on its database; worker and agent reconnect
    assert up.code == 0, up
    final = asyncio.run(wait_for(n, lambda s: s.state.final))
    assert final.state.value == "Complete", final
    assert log_lines(faults_stack, n) == [f"tick {i}" for i in range(1, 13)]


def _agent_pid(settings: Settings, machine_id: str) -> int:
    rec = local.describe(settings, machine_id)
    assert rec is not None
    return local.agent_pid(rec)


def test_agent_killed_restarted_and_not(faults_stack: Settings, tmp_path: Path) -> None:
    """Restarted (as any `conjure` command does): the run completes, its log whole.
    Not restarted: the run is Interrupted within twice the heartbeat timeout."""
    n = submit("for i in $(seq 1 16); do echo line $i; sleep 0.5; done", tmp_path)
    st = asyncio.run(wait_for(n, lambda s: s.state.value == "Running"))
    time.sleep(1.5)
    pid = _agent_pid(faults_stack, st.machine_id or "")
    os.kill(pid, signal.SIGKILL)
    while local.pid_alive(pid):
        time.sleep(0.05)
    assert local.start_stopped_agents(faults_stack) >= 1
    final = asyncio.run(wait_for(n, lambda s: s.state.final))
    assert final.state.value == "Complete", final
    assert log_lines(faults_stack, n) == [f"line {i}" for i in range(1, 17)]

    m = submit("sleep 300", tmp_path)
    st = asyncio.run(wait_for(m, lambda s: s.state.value == "Running"))
    os.kill(_agent_pid(faults_stack, st.machine_id or ""), signal.SIGKILL)
    killed = time.monotonic()
    final = asyncio.run(wait_for(m, lambda s: s.state.final, timeout=120))
    print(f"Interrupted {time.monotonic() - killed:.1f}s after the agent died")
    assert final.state.value == "Interrupted", final


def test_log_flood_costs_no_retry(faults_stack: Settings, tmp_path: Path) -> None:
    """400,000 lines at once under a limit of 1000 a second, the heartbeat timeout 8 s:
    one execute attempt, the drop notes add up to exactly the lines dropped, at most
    one note a window, the kept lines in order."""
    total = 400_000
    n = submit(f"seq 1 {total}", tmp_path)
    final = asyncio.run(wait_for(n, lambda s: s.state.final, timeout=400))
    assert final.state.value == "Complete", final
    assert asyncio.run(execute_attempts(faults_stack, n)) == [1]
    store = open_store(faults_stack.store, faults_stack)
    lines = list(LogReader(store, n).poll())
    kept = [int(ln.text) for ln in lines if ln.stream == "o"]
    notes = [ln for ln in lines if ln.stream == "c" and "dropped" in ln.text]
    dropped = sum(int(re.match(r"\[conjure\] (\d+) log line", ln.text).group(1)) for ln in notes)  # type: ignore[union-attr]
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    assert dropped == total - len(kept), (dropped, len(kept))
    at = {c.state.value: c.at for c in final.timeline}
    span = (at["Saving"] - at["Running"]).total_seconds()  # the agent's reading time
    assert len(notes) <= span / 1.0 + 2, f"{len(notes)} notes over {span:.1f}s"


def test_limit_holds_for_two_submitters(faults_stack: Settings, tmp_path: Path) -> None:
    """The campaign's limit test: 60 runs under a limit of 4, half from the CLI and half
    from the Python API at the same time. Docker's own count of running run containers,
    sampled, reaches the limit and never passes it; every run completes."""
    ids, peak = submit_from_two(faults_stack, "sleep 2; echo ok", 60, tmp_path)
    print(f"at most {peak} programs running at once under a limit of {LIMIT}")
    assert peak == LIMIT
    assert all(log_lines(faults_stack, n) == ["ok"] for n in ids)
