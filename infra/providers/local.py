"""The `local` provider: a machine is a worker agent process on this host.

Each machine has a folder `$CONJURE_HOME/machines/<id>/` holding `machine.json`
(its type and the agent's pid), the agent's log, its run workspaces and caches.
The agent runs in its own session, so it outlives the control worker that
started it, as a cloud machine's agent outlives the control plane.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from conjure.infra.config import Settings
from conjure.workflows.keys import machine_task_queue
from conjure.workflows.models import MachineType

MACHINE_LABEL = "org.conjure.machine"


class InstanceRecord(BaseModel):
    machine_id: str
    machine_type: MachineType
    task_queue: str
    pid: int = 0
    state: str = "running"  # running | stopped | terminated


def _dir(settings: Settings, machine_id: str) -> Path:
    return settings.machines_dir / machine_id


def _record_path(settings: Settings, machine_id: str) -> Path:
    return _dir(settings, machine_id) / "machine.json"


def _read(settings: Settings, machine_id: str) -> InstanceRecord | None:
    try:
        return InstanceRecord.model_validate_json(_record_path(settings, machine_id).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write(settings: Settings, rec: InstanceRecord) -> None:
    path = _record_path(settings, rec.machine_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(rec.model_dump_json(indent=2))
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _start_agent(settings: Settings, rec: InstanceRecord) -> int:
    d = _dir(settings, rec.machine_id)
    log = open(d / "agent.log", "ab")
    env = settings.child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conjure.worker_agent", "--machine-id", rec.machine_id],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    return proc.pid


def provision(settings: Settings, machine_id: str, machine_type: MachineType) -> InstanceRecord:
    rec = _read(settings, machine_id)
    if rec is not None and rec.state == "running" and pid_alive(rec.pid):
        return rec  # idempotent: already provisioned
    rec = InstanceRecord(
        machine_id=machine_id,
        machine_type=machine_type,
        task_queue=machine_task_queue(machine_id),
    )
    _dir(settings, machine_id).mkdir(parents=True, exist_ok=True)
    _write(settings, rec)
    rec.pid = _start_agent(settings, rec)
    _write(settings, rec)
    return rec


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_containers(machine_id: str) -> None:
    try:
        import docker

        client = docker.from_env()
        for c in client.containers.list(
            all=True, filters={"label": f"{MACHINE_LABEL}={machine_id}"}
        ):
            c.remove(force=True)
    except Exception:  # Docker gone: nothing of ours can be running there either
        pass


def terminate(settings: Settings, machine_id: str) -> None:
    rec = _read(settings, machine_id)
    if rec is not None:
        _stop_pid(rec.pid)
    _remove_containers(machine_id)
    shutil.rmtree(_dir(settings, machine_id), ignore_errors=True)


def reclaim(settings: Settings, machine_id: str) -> None:
    """What a cloud does to a reclaimed spot instance, done to a local machine: its agent
    and containers vanish at once and the provider reports the instance `reclaimed`."""
    rec = _read(settings, machine_id)
    if rec is None:
        return
    if pid_alive(rec.pid):
        os.kill(rec.pid, signal.SIGKILL)
    _remove_containers(machine_id)
    rec.state = "reclaimed"
    _write(settings, rec)


def describe(settings: Settings, machine_id: str) -> InstanceRecord | None:
    rec = _read(settings, machine_id)
    if rec is not None and rec.state == "running" and not pid_alive(rec.pid):
        rec.state = "stopped"
    return rec


def list_instances(settings: Settings) -> list[InstanceRecord]:
    if not settings.machines_dir.exists():
        return []
    out = []
    for d in sorted(settings.machines_dir.iterdir()):
        rec = describe(settings, d.name)
        if rec is not None:
            out.append(rec)
    return out


def stop_all_agents(settings: Settings) -> int:
    """`conjure down`: stop every agent, keeping the machines (as a host shuts down)."""
    n = 0
    for rec in list_instances(settings):
        if pid_alive(rec.pid):
            _stop_pid(rec.pid)
            n += 1
    return n


def start_stopped_agents(settings: Settings) -> int:
    """`conjure up`: restart the agent of every machine whose agent is not running."""
    n = 0
    for rec in list_instances(settings):
        if rec.state == "stopped":
            rec.state = "running"
            rec.pid = _start_agent(settings, rec)
            _write(settings, rec)
            n += 1
    return n
