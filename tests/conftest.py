"""Session fixtures: a real embedded stack (Temporal dev server, control worker,
local machines on the real Docker engine) in a temporary CONJURE_HOME."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from conjure.infra import stack
from conjure.infra.config import Settings, get_settings
from conjure.infra.providers import local

CONJURE = str(Path(sys.executable).parent / "conjure")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for_starts(address: str, timeout: float = 60) -> Client:
    """A client of the dev server at `address` once it takes workflow starts: its port
    answers before its namespace exists. The probe workflow is never run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await Client.connect(address)
            await client.start_workflow(
                "Probe", id="ready", task_queue="nobody-polls",
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )  # fmt: skip
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


class RunningPrograms:
    """The most run containers of one stack's machines that Docker reported running at
    the same instant, sampled every `every` seconds on a thread until stopped: programs
    really running at once, not run states read one after another."""

    def __init__(self, settings: Settings, every: float = 0.05) -> None:
        import threading

        self.settings = settings
        self.every = every
        self.peak = 0
        self.error: Exception | None = None  # what ended the sampling early
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunningPrograms:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"sampling Docker failed, the peak is partial: {self.error!r}")

    def _sample(self) -> None:
        engine = docker.from_env()
        try:
            while not self._stop.is_set():
                ours = {rec.machine_id for rec in local.list_instances(self.settings)}
                # One list call (no inspect per container: one may be gone by then).
                running = engine.api.containers(
                    filters={"label": "org.conjure.run", "status": "running"}
                )
                n = sum(1 for c in running if c["Labels"].get(local.MACHINE_LABEL) in ours)
                self.peak = max(self.peak, n)
                self._stop.wait(self.every)
        except Exception as e:
            self.error = e
        finally:
            engine.close()


def submit_from_two(settings: Settings, cmd: str, runs: int, cwd: Path) -> tuple[list[int], int]:
    """RUNS runs of `cmd` submitted at the same time by two submitters, half through the
    `conjure run --background` command (three at a time) and half through the Python API,
    each waited for until final: (their ids, the most programs running at once)."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from conjure import AsyncConjure, AsyncRun

    ids: list[int] = []
    lock = threading.Lock()

    def one_from_cli(_: int) -> None:
        r = conjure("run", "--background", cmd, cwd=cwd)
        assert r.code == 0, r
        with lock:
            ids.append(int(r.out.strip()))

    def from_cli() -> None:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(one_from_cli, range(runs // 2)))

    async def from_api() -> None:
        c = AsyncConjure(settings)
        for _ in range(runs - runs // 2):
            run = await c.run(cmd, cwd=cwd)
            with lock:
                ids.append(run.id)

    async def wait_all() -> None:
        c = AsyncConjure(settings, autostart=False)
        states = [(await AsyncRun(c, n).wait()).state.value for n in ids]
        assert states == ["Complete"] * runs, states

    with RunningPrograms(settings) as programs:
        t = threading.Thread(target=from_cli)
        t.start()
        asyncio.run(from_api())
        t.join()
        assert len(set(ids)) == runs, ids
        asyncio.run(wait_all())
    return ids, programs.peak


def stack_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        "CONJURE_HOME": str(home),
        "CONJURE_EMBEDDED_PORT": str(free_port()),
        "CONJURE_EMBEDDED_UI_PORT": str(free_port()),
        "CONJURE_CONSOLE_PORT": str(free_port()),
        **extra,
    }
    return env


def stop_stack(settings: Settings) -> None:
    """Terminate every local machine of the stack (agents, containers), then stop it."""
    try:
        for rec in local.list_instances(settings):
            try:
                local.terminate(settings, rec.machine_id)
            except Exception as e:  # keep going: leave nothing else running
                print(f"stop_stack: terminating {rec.machine_id}: {e}")
        if settings.ssh_hosts:  # their tunnels are this host's processes
            from conjure.infra.providers import ssh

            ssh.terminate_all(settings)
    finally:
        stack.down(settings)


def warm_cli_ready(settings: Settings, timeout: float = 60) -> int:
    """The warm CLI's pid once its socket accepts (started as the stack starts it, if it
    is not running), so the test's `conjure` calls go through it (cli/warm.py)."""
    stack.start_warm_cli(settings)
    path = str(settings.run_dir / "cli.sock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
            return int((settings.run_dir / "cli.pid").read_text())
        except OSError:
            time.sleep(0.05)
    log = (settings.run_dir / "cli.log").read_text()
    raise AssertionError(f"the warm CLI did not start:\n{log}")


@contextmanager
def running_stack(env: dict[str, str]) -> Iterator[Settings]:
    """A stack with these CONJURE_* settings, exported for the test's `conjure` calls,
    which its warm CLI serves (unless CONJURE_WARM_CLI=0).

    Whatever happens (a failed start included), the stack is stopped and the process
    environment restored, so one stack's trouble never leaks into the next tests.
    """
    saved = dict(os.environ)
    os.environ.update(env)
    settings = get_settings()
    try:
        asyncio.run(stack.up(settings))
        if settings.warm_cli:
            warm_cli_ready(settings)
        yield settings
    finally:
        try:
            stop_stack(settings)
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def conjure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("conjure-home")
    with running_stack(stack_env(home, CONJURE_IDLE_TIMEOUT_SECONDS="600")) as settings:
        yield settings


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env()


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def conjure(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> Result:
    """Run the real `conjure` entry point."""
    proc = subprocess.run(
        [CONJURE, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc)
