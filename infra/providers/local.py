"""The `local` provider: a machine is a worker agent process on this host.

Each machine has a folder `$CONJURE_HOME/machines/<id>/` holding `machine.json`
(its `Instance` record: the instance id is the agent's pid), the agent's log, its run
workspaces and caches.
The agent runs in its own session, so it outlives the control worker that
started it, as a cloud machine's agent outlives the control plane.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from conjure.infra.config import Settings
from conjure.infra.locks import file_lock
from conjure.infra.processes import pid_alive, process_command, spawn, stop_pid
from conjure.infra.providers.base import use_spot
from conjure.workflows.models import Instance, MachineType

MACHINE_LABEL = "org.conjure.machine"


def _dir(settings: Settings, machine_id: str) -> Path:
    return settings.machines_dir / machine_id


def _record_path(settings: Settings, machine_id: str) -> Path:
    return _dir(settings, machine_id) / "machine.json"


def agent_pid(rec: Instance) -> int:
    """A local machine's instance is its agent process."""
    return int(rec.instance_id) if rec.instance_id.isdigit() else 0


def _read(settings: Settings, machine_id: str) -> Instance | None:
    try:
        data = json.loads(_record_path(settings, machine_id).read_text())
        if isinstance(data.get("machine_type"), dict):  # written by an earlier Conjure
            data["machine_type"] = data["machine_type"].get("name", "")
            data["instance_id"] = str(data.pop("pid", 0) or "")
        return Instance.model_validate(data)
    except (FileNotFoundError, ValueError, AttributeError):
        return None


def _write(settings: Settings, rec: Instance) -> None:
    path = _record_path(settings, rec.machine_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(rec.model_dump_json(indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def machine_lock(settings: Settings, machine_id: str) -> Iterator[None]:
    """Held while a machine's agent is started or the machine terminated, so the two
    exclude each other: a restart never brings back the agent of a machine being
    terminated. The lock file lives outside the machine's folder (which terminate removes)."""
    with file_lock(settings.machines_dir / ".locks" / f"{machine_id}.lock"):
        yield


AGENT_MODULE = "conjure.worker_agent"


def agent_processes(settings: Settings) -> dict[int, str]:
    """pid -> machine id of every agent process of this $CONJURE_HOME on this host,
    whoever started it (found in /proc: the module it runs and its CONJURE_HOME)."""
    home = str(settings.home.resolve())
    default_home = str((Path.home() / ".conjure").resolve())
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if AGENT_MODULE.encode() not in argv or b"--machine-id" not in argv:
                continue
            machine_id = argv[argv.index(b"--machine-id") + 1].decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        theirs = default_home
        for var in environ:
            if var.startswith(b"CONJURE_HOME="):
                theirs = str(Path(var[len(b"CONJURE_HOME=") :].decode()).resolve())
        if theirs == home and pid_alive(int(entry.name)):
            out[int(entry.name)] = machine_id
    return out


def _start_agent(settings: Settings, machine_id: str) -> str:
    env = settings.child_env()
    env["CONJURE_HOME"] = str(settings.home)  # how agent_processes() knows it is ours
    pid = spawn(
        process_command("agent", "--machine-id", machine_id),
        _dir(settings, machine_id) / "agent.log",
        env,
    )
    return str(pid)


def provision(settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
    with machine_lock(settings, machine_id):
        return _provision(settings, machine_id, machine_type)


def _provision(settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
    rec = _read(settings, machine_id)
    if rec is not None and rec.state == "running" and pid_alive(agent_pid(rec)):
        return rec  # idempotent: already provisioned
    rec = Instance(
        machine_id=machine_id,
        provider="local",
        machine_type=machine_type.name,
        instance_type=machine_type.name,
        state="running",
        # As a cloud would launch it: spot where both `spot = true` and the type allow
        # (its `reclaim` is what a cloud does to such a machine).
        spot=use_spot(settings, machine_type),
    )
    _dir(settings, machine_id).mkdir(parents=True, exist_ok=True)
    _write(settings, rec)
    rec.instance_id = _start_agent(settings, machine_id)
    _write(settings, rec)
    return rec


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
    with machine_lock(settings, machine_id):
        rec = _read(settings, machine_id)
        if rec is not None:
            rec.state = "terminated"  # nothing restarts it from here on
            _write(settings, rec)
            stop_pid(agent_pid(rec))
        # Any other agent process of this machine too (one a racing restart started).
        for pid, owner in agent_processes(settings).items():
            if owner == machine_id:
                stop_pid(pid)
        _remove_containers(machine_id)
        shutil.rmtree(_dir(settings, machine_id), ignore_errors=True)


def reclaim(settings: Settings, machine_id: str) -> None:
    """What a cloud does to a reclaimed spot instance, done to a local machine: its agent
    and containers vanish at once and the provider reports the instance `reclaimed`."""
    rec = _read(settings, machine_id)
    if rec is None:
        return
    if pid_alive(agent_pid(rec)):
        os.kill(agent_pid(rec), signal.SIGKILL)
    _remove_containers(machine_id)
    rec.state = "reclaimed"
    _write(settings, rec)


def describe(settings: Settings, machine_id: str) -> Instance | None:
    rec = _read(settings, machine_id)
    if rec is not None and rec.state == "running" and not pid_alive(agent_pid(rec)):
        rec.state = "stopped"
    return rec


def list_instances(settings: Settings) -> list[Instance]:
    """Every machine with a folder, plus every agent process of this home whose machine
    has none (an orphan: reported running, so the reconciler terminates it)."""
    out = []
    if settings.machines_dir.exists():
        for d in sorted(settings.machines_dir.iterdir()):
            rec = describe(settings, d.name) if not d.name.startswith(".") else None
            if rec is not None:
                out.append(rec)
    known = {rec.machine_id for rec in out}
    for pid, machine_id in sorted(agent_processes(settings).items()):
        if machine_id not in known:
            known.add(machine_id)
            out.append(
                Instance(
                    machine_id=machine_id,
                    provider="local",
                    machine_type="unknown",
                    instance_id=str(pid),
                    state="running",
                )
            )
    return out


def stop_all_agents(settings: Settings) -> int:
    """`conjure down`: stop every agent, keeping the machines (as a host shuts down)."""
    n = 0
    for rec in list_instances(settings):
        if pid_alive(agent_pid(rec)):
            stop_pid(agent_pid(rec))
            n += 1
    for pid in agent_processes(settings):  # orphans, and any a racing restart started
        stop_pid(pid)
        n += 1
    return n


def start_stopped_agents(settings: Settings) -> int:
    """`conjure up`: restart the agent of every machine whose agent is not running."""
    n = 0
    for listed in list_instances(settings):
        if listed.state != "stopped":
            continue
        with machine_lock(settings, listed.machine_id):
            rec = describe(settings, listed.machine_id)  # again, under the lock
            if rec is None or rec.state != "stopped":
                continue  # terminated (or restarted) meanwhile
            rec.state = "running"
            rec.instance_id = _start_agent(settings, rec.machine_id)
            _write(settings, rec)
            n += 1
    return n
