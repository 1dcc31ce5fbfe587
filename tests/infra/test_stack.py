"""The embedded stack's life: started by `conjure run` itself, `up`/`down`/`up` keeping
every run, idle machines reused then terminated by their durable timer, and a retried
submission never making a second run. A stack of its own, on free ports."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conjure import AsyncConjure
from conjure.infra.config import Settings
from conjure.infra.providers import local
from conjure.workflows.models import CodeSpec, RunSpec
from tests.conftest import conjure, stack_env

IDLE = 4.0


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("own-stack")
    env = stack_env(home, CONJURE_IDLE_TIMEOUT_SECONDS=str(IDLE))
    yield env
    settings = settings_of(env)
    for rec in local.list_instances(settings):
        local.terminate(settings, rec.machine_id)
    conjure("down", env=env)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        home=Path(env["CONJURE_HOME"]),
        embedded_port=int(env["CONJURE_EMBEDDED_PORT"]),
        embedded_ui_port=int(env["CONJURE_EMBEDDED_UI_PORT"]),
        idle_timeout_seconds=IDLE,
    )


def test_run_starts_the_stack_then_up_down_up_keeps_runs(
    own_stack: dict[str, str], tmp_path: Path
) -> None:
    r = conjure("run", "echo first", cwd=tmp_path, env=own_stack)
    assert r.code == 0, r
    assert "Started the embedded stack" in r.err and "Temporal Web UI" in r.err
    console = f"http://127.0.0.1:{own_stack['CONJURE_CONSOLE_PORT']}"
    assert f"console: {console}" in r.err
    assert r.out == "first\n"
    with urllib.request.urlopen(f"{console}/api/runs") as resp:
        assert [x["id"] for x in json.load(resp)["runs"]] == [1]

    again = conjure("up", env=own_stack)
    assert again.code == 0, again
    assert "already running" in again.err
    assert f"http://127.0.0.1:{own_stack['CONJURE_EMBEDDED_UI_PORT']}" in again.err

    assert f"console: {console}" in again.err
    down = conjure("down", env=own_stack)
    assert down.code == 0 and "temporal" in down.err and "console" in down.err
    assert (
        "warm CLI" in down.err and not (Path(own_stack["CONJURE_HOME"]) / "run/cli.sock").exists()
    )
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{console}/api/runs", timeout=5)
    up = conjure("up", env=own_stack)
    assert up.code == 0, up
    runs = json.loads(conjure("ls", "--json", env=own_stack).out)
    assert [(x["id"], x["state"], x["command"]) for x in runs] == [(1, "Complete", "echo first")]
    st = json.loads(conjure("status", "1", "--json", env=own_stack).out)
    assert st["state"] == "Complete"


def test_idle_machine_reused_then_terminated(own_stack: dict[str, str], tmp_path: Path) -> None:
    settings = settings_of(own_stack)
    a = conjure("run", "true", cwd=tmp_path, env=own_stack)
    b = conjure("run", "true", cwd=tmp_path, env=own_stack)
    assert a.code == 0 and b.code == 0, (a, b)
    assert "idle machine reused" in b.err
    machines = json.loads(conjure("machines", "--json", env=own_stack).out)
    assert machines and all(m["state"] == "idle" for m in machines)
    pids = [local.agent_pid(rec) for rec in local.list_instances(settings)]
    assert pids and all(local.pid_alive(p) for p in pids)
    deadline = time.monotonic() + IDLE + 30
    while time.monotonic() < deadline:
        if not json.loads(conjure("machines", "--json", env=own_stack).out):
            break
        time.sleep(1)
    assert json.loads(conjure("machines", "--json", env=own_stack).out) == []
    assert local.list_instances(settings) == []
    assert not any(local.pid_alive(p) for p in pids)


def test_retried_submission_is_the_same_run(own_stack: dict[str, str]) -> None:
    async def go() -> tuple[int, int, int]:
        c = AsyncConjure(settings_of(own_stack))
        spec = RunSpec(
            command="echo once", machine_type=c.machine_type("cpu"), code=CodeSpec(),
            request_id="retry-me-1",
        )  # fmt: skip
        first = await c.submit(spec)
        second = await c.submit(spec)
        await first.wait()
        third = await c.submit(spec)  # retried after it finished: still the same run
        return first.id, second.id, third.id

    a, b, c = asyncio.run(go())
    assert a == b == c
    runs = json.loads(conjure("ls", "--json", env=own_stack).out)
    assert sum(1 for x in runs if x["command"] == "echo once") == 1


@pytest.mark.parametrize("victim", ["worker", "temporal"])
def test_crash_of_worker_or_server_mid_run_loses_nothing(
    own_stack: dict[str, str], tmp_path: Path, victim: str
) -> None:
    """SIGKILL the control worker or the Temporal server while a run is Running; after
    `conjure up` restarts it, the run finishes Complete with its logs and outputs."""
    from conjure.infra import stack

    settings = settings_of(own_stack)
    r = conjure("run", "--background", "echo before; sleep 4; echo after; echo data > out.txt",
                cwd=tmp_path, env=own_stack)  # fmt: skip
    assert r.code == 0, r
    n = int(r.out.strip())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = json.loads(conjure("status", str(n), "--json", env=own_stack).out)
        if st["state"] == "Running":
            break
        time.sleep(0.2)
    stack.kill_for_tests(settings, victim)
    time.sleep(1)
    up = conjure("up", env=own_stack)
    assert up.code == 0, up
    assert f"started {victim}" in up.err
    logs = conjure("logs", "-f", str(n), env=own_stack, timeout=180)
    assert logs.code == 0, logs
    assert logs.out == "before\nafter\n"
    st = json.loads(conjure("status", str(n), "--json", env=own_stack).out)
    assert st["state"] == "Complete" and st["outputs"] == 1
    out = json.loads(conjure("ls", f"runs/{n}", "--json", env=own_stack).out)
    assert [e["path"] for e in out] == [f"runs/{n}/out.txt"]
