"""Run control end to end against the real stack: stop, kill, metrics, stop
conditions, failure diagnosis, and machines that disappear under a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from temporalio.client import WorkflowUpdateHandle, WorkflowUpdateStage

from conjure import AsyncConjure, AsyncRun
from conjure.infra.config import Settings, get_settings
from conjure.infra.providers import local
from conjure.infra.providers.local import MACHINE_LABEL
from conjure.workflows.models import RunStatus
from conjure.workflows.run import RunWorkflow
from tests.cli.test_run_e2e import git, run_id_of, status
from tests.cli.test_ui_truth_e2e import listed_ids
from tests.conftest import conjure
from tests.workflows.test_replay import assert_final_before_cleanup, history_names

TRAIN = """\
import signal, sys, time
def on_term(*_):
    time.sleep(1)  # a last checkpoint takes a while
    open("final.ckpt", "w").write("final\\n")
    print("wrote the final checkpoint", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
for i in range(10_000):
    open(f"ckpt-{i}.txt", "w").write(str(i))
    print("epoch", i, flush=True)
    time.sleep(0.3)
"""


def project(tmp_path: Path) -> Path:
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "train")
    return repo


def start_background(cmd: str, cwd: Path, *extra: str, env: dict[str, str] | None = None) -> int:
    r = conjure("run", "--background", *extra, cmd, cwd=cwd, env=env)
    assert r.code == 0, r
    return int(r.out.strip())


def api() -> AsyncConjure:
    """The API without autostart: polling it never restarts a machine's agent."""
    return AsyncConjure(get_settings(), autostart=False)


async def wait_for(run_id: int, pred, timeout: float = 180):  # type: ignore[no-untyped-def]
    run = AsyncRun(api(), run_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await run.status()
        if pred(st):
            return st
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} never got there; last status {st}")


def logged(run_id: int) -> list[str]:
    return conjure("logs", str(run_id)).out.splitlines()


async def wait_logged(run_id: int, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in logged(run_id)):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared in the log of run {run_id}")


async def history(run_id: int) -> list[str]:
    """The closed run's history as names (tests/workflows/test_replay.py)."""
    run = AsyncRun(api(), run_id)
    await run.wait()
    handle = (await api().client()).get_workflow_handle(run.workflow_id)
    return history_names([e async for e in handle.fetch_history_events()])


async def waiting(run_id: int) -> WorkflowUpdateHandle[RunStatus]:
    """A `final_status` update (what `--wait` sends), accepted before the stop or kill."""
    handle = (await api().client()).get_workflow_handle(AsyncRun(api(), run_id).workflow_id)
    return await handle.start_update(
        RunWorkflow.final_status, wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )


def assert_nothing_left(settings: Settings, st: dict) -> None:
    """The run's container, volumes and folder on its machine are gone."""
    labels = [f"org.conjure.run={st['run_id']}", f"{MACHINE_LABEL}={st['machine_id']}"]
    engine = docker.from_env()
    assert not engine.containers.list(all=True, filters={"label": labels})
    assert not engine.volumes.list(filters={"label": labels})
    assert not (settings.machines_dir / st["machine_id"] / "runs" / str(st["run_id"])).exists()


def outputs(run_id: int) -> list[str]:
    r = conjure("ls", f"runs/{run_id}", "--json")
    return [e["path"].split("/", 2)[2] for e in json.loads(r.out)] if r.code == 0 else []


# --- stop and kill ----------------------------------------------------------------------


async def test_stop_saves_every_file_and_the_trapped_checkpoint(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    repo = project(tmp_path)
    # a compound command: SIGTERM must reach python, not only the shell
    n = start_background("echo start && python3 train.py && echo never", repo)
    await wait_logged(n, "epoch 3")
    r = conjure("stop", str(n), "--grace", "20")
    assert r.code == 0, r
    assert "Stopping run" in r.err
    again = conjure("stop", str(n))  # twice: harmless
    assert again.code in (0, 1), again
    st = await wait_for(n, lambda s: s.state.final)
    assert st.state.value == "Stopped", st
    states = [c.state.value for c in st.timeline]
    assert states[-4:] == ["Running", "Saving", "Pushing", "Stopped"]
    assert st.stopped_by == "`conjure stop`"
    files = outputs(n)
    assert "final.ckpt" in files and "ckpt-0.txt" in files and "ckpt-3.txt" in files
    assert "wrote the final checkpoint" in logged(n)
    assert "never" not in logged(n)
    # The program's own exit code, not the wrapper shell's 143, and no line of the wrapper.
    assert st.exit_code == 3, st
    assert not any("Terminated" in line for line in logged(n)), logged(n)
    done = conjure("stop", str(n))
    assert done.code == 1 and f"run {n} is already Stopped" in done.err, done


async def test_stopped_program_log_is_only_its_own(conjure_stack: Settings, tmp_path: Path) -> None:
    """A program that SIGTERM's default action ends: its log is the line it printed, with
    no `Terminated` from a shell that waited on it (the wrapper runs one program by exec)."""
    n = start_background("python3 -u -c 'import time; print(\"up\"); time.sleep(600)'", tmp_path)
    await wait_logged(n, "up")
    assert conjure("stop", str(n)).code == 0
    st = await wait_for(n, lambda s: s.state.final)
    assert st.state.value == "Stopped" and st.exit_code == 143, st
    lines = [line.text async for line in AsyncRun(api(), n).logs(program_only=True)]
    assert lines == ["up"], lines
    # `ls --state` filters on its final state, not on an earlier one.
    assert n not in listed_ids("--state", "Running") and n in listed_ids("--state", "Stopped")


async def test_stop_grace_runs_out_then_sigkill(conjure_stack: Settings, tmp_path: Path) -> None:
    n = start_background(
        "trap '' TERM; i=0; while true; do i=$((i+1)); echo $i > count.txt; sleep 0.2; done",
        tmp_path,
    )  # fmt: skip
    await wait_for(n, lambda s: s.state.value == "Running")
    await asyncio.sleep(1)
    waiter = await waiting(n)
    r = conjure("stop", "--wait", "--grace", "1", str(n))
    assert r.code == 0, r
    assert "is Stopped" in r.err
    assert (await waiter.result()).state.value == "Stopped"
    st = status(n)
    assert st["exit_code"] == 137  # the grace period ran out: SIGKILL
    assert "count.txt" in outputs(n)
    # Stopped once its files were saved, before the clean-up; saved once.
    names = await history(n)
    assert names.count("completed:save_outputs") == 1, names
    assert names.index("completed:save_outputs") < names.index("state:Stopped"), names
    assert_final_before_cleanup(names, "Stopped")
    assert_nothing_left(conjure_stack, st)


async def test_kill_saves_nothing_and_releases_the_machine(
    conjure_stack: Settings, tmp_path: Path
) -> None:
    repo = project(tmp_path)
    n = start_background("python3 train.py", repo)
    await wait_logged(n, "epoch 2")
    waiter = await waiting(n)
    r = conjure("kill", "--wait", str(n))
    assert r.code == 0, r
    assert (await waiter.result()).state.value == "Killed"
    st = status(n)
    assert st["state"] == "Killed" and st["exit_code"] == 137
    states = [c["state"] for c in st["timeline"]]
    assert "Saving" not in states and "Pushing" not in states
    assert outputs(n) == []
    names = await history(n)
    assert names.index("completed:execute") < names.index("state:Killed"), names
    assert_final_before_cleanup(names, "Killed")
    assert_nothing_left(conjure_stack, st)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # released: idle again, ready for the next run
        machines = json.loads(conjure("machines", "--json").out)
        mine = next(m for m in machines if m["id"] == st["machine_id"])
        if mine["state"] == "idle":
            break
        await asyncio.sleep(0.2)
    assert mine["state"] == "idle" and mine["run_workflow_id"] is None
    assert conjure("kill", str(n)).code == 1
    assert "already Killed" in conjure("stop", str(n)).err


# --- failure diagnosis --------------------------------------------------------------------


def test_out_of_memory_is_explained(conjure_stack: Settings, tmp_path: Path) -> None:
    cfg = conjure_stack.home / "config.toml"
    text = cfg.read_text() if cfg.exists() else ""
    if "[machine_types.tiny]" not in text:
        cfg.write_text(text + "\n[machine_types.tiny]\nvcpus = 1\nmemory_gb = 0.125\n")
    r = conjure("run", "--machine-type", "tiny",
                "python3 -c \"x = bytearray(512 * 2**20); print('allocated')\"", cwd=tmp_path)  # fmt: skip
    assert r.code == 137, r
    assert "allocated" not in r.out
    assert "out of memory" in r.err and "--machine-type" in r.err
    st = status(run_id_of(r.err))
    assert st["state"] == "Failed" and st["exit_code"] == 137
    assert "out of memory or disk" in st["reason"]


@contextlib.contextmanager
def machine_with_mirror(settings: Settings, machine_type: str, mirror: str) -> Iterator[list[str]]:
    """A new machine type, so a new agent starts and reads `debian_mirror` from config.toml
    (a machine's settings are its own); the file is put back afterwards. The base image
    named in the run does not exist, so the agent builds it from that mirror."""
    cfg = settings.home / "config.toml"
    before = cfg.read_text() if cfg.exists() else ""
    cfg.write_text(
        f'debian_mirror = "{mirror}"\n{before}\n[machine_types.{machine_type}]\nvcpus = 1\nmemory_gb = 1\n'
    )
    try:
        yield ["--machine-type", machine_type]
    finally:
        cfg.write_text(before + f"\n[machine_types.{machine_type}]\nvcpus = 1\nmemory_gb = 1\n")


def test_failed_build_shows_the_log_tail(conjure_stack: Settings, tmp_path: Path) -> None:
    with socket.socket() as s:  # a mirror that refuses every connection
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CONJURE_BASE_IMAGE": "conjure/never-built:test"}
    with machine_with_mirror(conjure_stack, "build-fails", f"http://127.0.0.1:{port}/debian") as mt:
        r = conjure("run", *mt, "echo never", cwd=tmp_path, env=env)
    assert r.code == 1, r
    assert "Failed: Building failed: building the base image failed" in r.err
    assert "The log's last lines" in r.err and "debootstrap" in r.err
    n = run_id_of(r.err)
    st = status(n)
    assert st["state"] == "Failed" and st["timeline"][-2]["state"] == "Building"
    assert st["log_tail"] and any("debootstrap" in line for line in st["log_tail"])
    human = conjure("status", str(n))
    assert "log (last lines):" in human.out and "debootstrap" in human.out


def test_building_run_stops_building(conjure_stack: Settings, tmp_path: Path) -> None:
    """A mirror that accepts connections and never answers: the build hangs until stopped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop_accepting = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop_accepting.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        env = {"CONJURE_BASE_IMAGE": "conjure/never-built:hang"}
        mirror = f"http://127.0.0.1:{server.getsockname()[1]}/debian"
        with machine_with_mirror(conjure_stack, "build-hangs", mirror) as mt:
            n = start_background("echo never", tmp_path, *mt, env=env)
            asyncio.run(wait_for(n, lambda s: s.state.value == "Building"))
            deadline = time.monotonic() + 60
            while not held and time.monotonic() < deadline:  # the agent has read its config
                time.sleep(0.2)
        assert held, "the build never reached the mirror"
        r = conjure("stop", "--wait", str(n))
        assert r.code == 0, r
        st = status(n)
        assert st["state"] == "Stopped" and "in Building" in st["reason"], st
        assert "Running" not in [c["state"] for c in st["timeline"]]
    finally:
        stop_accepting.set()
        t.join()
        for c in held:
            c.close()
        server.close()


# --- metrics and stop conditions -------------------------------------------------------------

SERIES = """\
import time
from conjure_metrics import send_metric, KerasCallback
cb = KerasCallback()
for epoch, acc in enumerate([0.1, 0.2, 0.3, 0.6, 0.4, 0.9]):
    cb.on_epoch_end(epoch, {"val_acc": acc, "loss": 1 - acc})
    send_metric("custom", epoch * 10, step=epoch)
    time.sleep(0.4)
with open(__import__("os").environ["CONJURE_METRICS_FILE"], "a") as f:
    f.write("shell 42 1\\n")
time.sleep(2.5)
"""


def test_metrics_logged_and_printed(conjure_stack: Settings, tmp_path: Path) -> None:
    (tmp_path / "series.py").write_text(SERIES)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "s")
    r = conjure(
        "run", "python3 series.py", cwd=tmp_path, env={"CONJURE_HARDWARE_METRICS_SECONDS": "0.5"}
    )
    assert r.code == 0, r
    n = run_id_of(r.err)
    js = conjure("metrics", str(n), "--json")
    assert js.code == 0, js
    data = json.loads(js.out)
    assert [p["value"] for p in data["keras/val_acc"]] == [0.1, 0.2, 0.3, 0.6, 0.4, 0.9]
    assert [p["step"] for p in data["keras/val_acc"]] == [1, 2, 3, 4, 5, 6]
    assert [p["index"] for p in data["keras/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [p["value"] for p in data["custom"]] == [0, 10, 20, 30, 40, 50]
    assert data["shell"][0]["value"] == 42 and data["shell"][0]["step"] == 1
    assert data["hardware/memory_mb"] and all(p["value"] > 0 for p in data["hardware/memory_mb"])
    assert data["hardware/cpu_percent"]
    table = conjure("metrics", str(n))
    assert table.code == 0
    row = next(line for line in table.out.splitlines() if line.startswith("keras/val_acc"))
    assert row.split()[1:5] == ["6", "0.9", "0.1", "0.9"]
    one = conjure("metrics", str(n), "custom")
    assert one.code == 0 and len(one.out.strip().splitlines()) == 7  # header + 6 values
    missing = conjure("metrics", str(n), "nope")
    assert missing.code == 1 and "has no metric 'nope'" in missing.err


def test_stop_condition_fires(conjure_stack: Settings, tmp_path: Path) -> None:
    (tmp_path / "series.py").write_text(SERIES.replace("time.sleep(2.5)", "time.sleep(120)"))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "s")
    r = conjure("run", "--stop-condition", "keras/val_acc < 0.5 : 5",
                "--stop-condition", "custom >= 1000", "python3 series.py", cwd=tmp_path)  # fmt: skip
    assert r.code != 0, r
    said = "stop condition `keras/val_acc < 0.5 : 5` fired on value 0.4 of keras/val_acc at count 5"
    assert said in r.err, r
    assert "Saving… done" in r.err
    n = run_id_of(r.err)
    st = status(n)
    assert st["state"] == "Stopped" and said in st["reason"]
    assert st["stop_conditions"] == ["keras/val_acc < 0.5 : 5", "custom >= 1000"]
    human = conjure("status", str(n))
    assert (
        "stop when:    custom >= 1000" in human.out and "stopped by:   stop condition" in human.out
    )


@pytest.mark.parametrize("cond", ["loss", "loss == 1", "loss < 1 : 0", "loss < x"])
def test_malformed_stop_condition(conjure_stack: Settings, tmp_path: Path, cond: str) -> None:
    before = len(json.loads(conjure("ls", "--json", "-n", "1000").out))
    r = conjure("run", "--stop-condition", cond, "true", cwd=tmp_path)
    assert r.code == 2, r
    assert "--stop-condition" in r.err and len(r.err.strip().splitlines()) == 1
    assert len(json.loads(conjure("ls", "--json", "-n", "1000").out)) == before


# --- machines that disappear ------------------------------------------------------------------

HEARTBEAT = 4.0


def agent_pid(machine_id: str) -> int:
    rec = local.describe(get_settings(), machine_id)
    assert rec is not None
    return local.agent_pid(rec)


async def test_agent_killed_for_good_interrupts_the_run(
    conjure_stack: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    n = start_background("for i in $(seq 1 600); do echo $i; sleep 0.5; done", tmp_path,
                         "--machine-type", "cpu-big",
                         env={"CONJURE_EXECUTE_HEARTBEAT_SECONDS": str(HEARTBEAT)})  # fmt: skip
    st = await wait_for(n, lambda s: s.state.value == "Running")
    machine = st.machine_id
    assert machine
    await asyncio.sleep(2)
    os.kill(agent_pid(machine), signal.SIGKILL)
    killed_at = time.monotonic()
    # From here on, no `conjure` command: it would restart the agent.
    st = await wait_for(n, lambda s: s.state.final, timeout=120)
    took = time.monotonic() - killed_at
    print(f"Interrupted {took:.1f}s after the agent died (heartbeat timeout {HEARTBEAT:g}s)")
    assert st.state.value == "Interrupted", st
    assert "stopped answering" in st.reason
    c = api()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = await c.pool()
        if machine not in {m.id for m in view.machines}:
            break
        await asyncio.sleep(0.5)
    assert machine not in {m.id for m in (await c.pool()).machines}
    assert not (conjure_stack.machines_dir / machine).exists()
    assert not docker_client.containers.list(
        all=True, filters={"label": f"{MACHINE_LABEL}={machine}"}
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_agent_restart_never_kills_the_run(
    conjure_stack: Settings, tmp_path: Path, sig: int
) -> None:
    n = start_background(
        "for i in $(seq 1 24); do echo line $i; sleep 0.5; done; echo done > out.txt",
        tmp_path, env={"CONJURE_EXECUTE_HEARTBEAT_SECONDS": str(HEARTBEAT)},
    )  # fmt: skip
    st = await wait_for(n, lambda s: s.state.value == "Running")
    await wait_logged(n, "line 3")
    pid = agent_pid(st.machine_id)
    os.kill(pid, sig)
    while local.pid_alive(pid):
        await asyncio.sleep(0.05)
    assert local.start_stopped_agents(get_settings()) == 1
    st = await wait_for(n, lambda s: s.state.final, timeout=120)
    assert st.state.value == "Complete", st
    assert logged(n) == [f"line {i}" for i in range(1, 25)]
    assert outputs(n) == ["out.txt"]
