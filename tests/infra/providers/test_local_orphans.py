"""No orphaned agents (issue 15, item 1), with real agent processes of the local provider.

An agent process is real (`python -m conjure.worker_agent`); it is pointed at a closed
port, so it stays in its connect retries for the test's length without a Temporal server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.providers import local
from conjure.workflows.models import Instance, MachineType
from tests.conftest import free_port


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CONJURE_HOME", str(tmp_path / "home"))
    # Agents reach no server: they stay alive retrying, which is all these tests need.
    monkeypatch.setenv("CONJURE_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    return Settings(home=tmp_path / "home")


def _spawn_ghost(settings: Settings, machine_id: str) -> subprocess.Popen[bytes]:
    """An agent of this home whose machine has no folder: what a racing restart leaves."""
    env = {**os.environ, "CONJURE_HOME": str(settings.home)}
    return subprocess.Popen(
        [sys.executable, "-m", "conjure.worker_agent", "agent", "--machine-id", machine_id],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _wait_listed(settings: Settings, machine_id: str) -> None:
    deadline = time.monotonic() + 20
    while machine_id not in local.agent_processes(settings).values():
        assert time.monotonic() < deadline, "the agent process never showed in /proc"
        time.sleep(0.1)


def test_an_agent_no_machine_owns_is_listed_terminated_and_stopped_by_down(
    settings: Settings,
) -> None:
    ghosts = [_spawn_ghost(settings, "ghost-a"), _spawn_ghost(settings, "ghost-b")]
    try:
        for g in ("ghost-a", "ghost-b"):
            _wait_listed(settings, g)
        listed = {r.machine_id: r for r in local.list_instances(settings)}
        # The reconciler sees them as instances the pool does not know: orphans.
        assert listed["ghost-a"].state == "running"
        assert local.agent_pid(listed["ghost-a"]) == ghosts[0].pid
        local.terminate(settings, "ghost-a")  # what the reconciler does to an orphan
        assert ghosts[0].wait(timeout=20) is not None
        assert local.stop_all_agents(settings) >= 1  # `conjure down`
        assert ghosts[1].wait(timeout=20) is not None
        assert local.agent_processes(settings) == {}
    finally:
        for g in ghosts:
            if g.poll() is None:
                g.kill()
                g.wait()


def test_restart_and_terminate_exclude_each_other(settings: Settings) -> None:
    """`start_stopped_agents` in a loop (every `conjure` command calls it) while stopped
    machines terminate: no agent survives its machine."""
    mtype = MachineType(name="cpu", vcpus=1, memory_gb=1)
    ids = [f"race-{i}" for i in range(4)]
    for machine_id in ids:
        rec = Instance(
            machine_id=machine_id, provider="local", machine_type=mtype.name, state="running"
        )
        local._dir(settings, machine_id).mkdir(parents=True)
        local._write(settings, rec)  # pid 0: a machine whose agent is stopped
    done = threading.Event()
    errors: list[BaseException] = []

    def restarter() -> None:
        while not done.is_set():
            try:
                local.start_stopped_agents(settings)
            except BaseException as e:
                errors.append(e)

    t = threading.Thread(target=restarter)
    t.start()
    try:
        for machine_id in ids:
            time.sleep(0.3)
            local.terminate(settings, machine_id)
    finally:
        done.set()
        t.join(timeout=60)
    try:
        assert not errors, errors
        assert not any((settings.machines_dir / m).exists() for m in ids)
        deadline = time.monotonic() + 10  # a just-started agent sees its record go
        while local.agent_processes(settings) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert local.agent_processes(settings) == {}
    finally:
        for pid in local.agent_processes(settings):
            os.kill(pid, 9)
