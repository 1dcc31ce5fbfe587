"""The warm CLI (cli/warm.py, cli/warm_server.py): the session stack starts its fork
server, so `conjure` commands are served by a forked child of it. Each test proves which
path served a call from the server's log (`client pid N: ... served by child M`) and
compares it with the same call run in its own process (CONJURE_WARM_CLI=0)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conjure.cli import warm
from conjure.infra.config import Settings
from conjure.infra.processes import pid_alive
from tests.conftest import CONJURE, Result, warm_cli_ready

COLD = {"CONJURE_WARM_CLI": "0"}


def _log(settings: Settings) -> str:
    return (settings.run_dir / "cli.log").read_text()


def _server_pid(settings: Settings) -> int:
    return int((settings.run_dir / "cli.pid").read_text())


def call(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Result, int]:
    """`conjure ARGS` as a user runs it, and the client's pid (to find it in the log)."""
    proc = subprocess.Popen(
        [CONJURE, *args], cwd=cwd, env={**os.environ, **(env or {})}, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return Result(done), proc.pid


def served_warm(settings: Settings, client_pid: int) -> bool:
    return (
        re.search(rf"client pid {client_pid}: `.*` served by child \d+", _log(settings)) is not None
    )


@pytest.fixture
def warm_stack(conjure_stack: Settings) -> Settings:
    warm_cli_ready(conjure_stack)
    return conjure_stack


def test_socket_is_owner_only(warm_stack: Settings) -> None:
    path = Path(warm.socket_path(str(warm_stack.home)))
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--bogus", "true"],  # a usage error: exit 2, one line
        ["status", "999999"],  # no such run
        ["machine-types"],
        ["ls", "--json", "--limit", "1"],
    ],
    ids=["usage", "not-found", "machine-types", "ls"],
)
def test_same_result_warm_and_in_process(warm_stack: Settings, args: list[str]) -> None:
    hot, pid = call(*args)
    assert served_warm(warm_stack, pid), _log(warm_stack)
    cold, cold_pid = call(*args, env=COLD)
    assert not served_warm(warm_stack, cold_pid)
    assert (hot.code, hot.out, hot.err) == (cold.code, cold.out, cold.err)
    if args[0] == "run":
        assert hot.code == 2 and len(hot.err.splitlines()) == 1, hot
        assert hot.err.startswith("error: No such option") and "conjure run --help" in hot.err


def test_caller_environment_cwd_and_output(warm_stack: Settings, tmp_path: Path) -> None:
    # A setting given for one call only: an unreachable server, one line, as in-process.
    env = {"CONJURE_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    hot, pid = call("ls", env=env)
    assert served_warm(warm_stack, pid)
    cold, _ = call("ls", env={**env, **COLD})
    assert hot.code == cold.code != 0 and hot.err == cold.err and len(hot.err.splitlines()) == 1
    # The caller's cwd is the git repository shipped, and the run's output reaches its stdout.
    (tmp_path / "marker.txt").write_text("from the caller's cwd\n")
    for git in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "warm"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *git], cwd=tmp_path, check=True
        )
    r, pid = call("run", "cat marker.txt && git log -1 --format=%s", cwd=tmp_path)
    assert served_warm(warm_stack, pid)
    assert r.code == 0 and r.out == "from the caller's cwd\nwarm\n", r


def test_dead_server_and_stale_code_fall_back(warm_stack: Settings) -> None:
    # Socket present, server dead: the command runs in its own process, same result, and
    # the stack's start (which this command makes) brings a new server.
    old = _server_pid(warm_stack)
    os.kill(old, signal.SIGKILL)
    while pid_alive(old):
        time.sleep(0.05)
    assert Path(warm.socket_path(str(warm_stack.home))).exists()
    r, pid = call("ls", "--json", "--limit", "1")
    assert r.code == 0 and not served_warm(warm_stack, pid), r
    new = warm_cli_ready(warm_stack)
    assert new != old
    # A module the server loaded changes on disk: it refuses (the call falls back and
    # gives the right answer) and ends; the next start serves the new code.
    module = Path(warm.__file__).with_name("wording.py")
    before = module.stat()
    try:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        r, pid = call("machine-types")
        assert r.code == 0 and "cpu" in r.out and not served_warm(warm_stack, pid), r
        assert f"refused client pid {pid}: {module} changed on disk" in _log(warm_stack)
        deadline = time.monotonic() + 10
        while pid_alive(new) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(new)
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert warm_cli_ready(warm_stack) != new


def test_client_killed_leaves_no_child(warm_stack: Settings, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [CONJURE, "run", "sleep 60"], cwd=tmp_path, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = ""
    while "Casting run" not in seen:
        seen += proc.stderr.readline()
    run_id = re.search(r"run #(\d+)", seen)
    m = re.search(rf"client pid {proc.pid}: `run` served by child (\d+)", _log(warm_stack))
    assert m and run_id, _log(warm_stack)
    child = int(m.group(1))
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)
    r, _ = call("kill", run_id.group(1))  # the run itself goes on, as after a cold client
    assert r.code == 0, r


def test_off_switch_and_what_runs_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONJURE_WARM_CLI wins over config.toml's warm_cli; the stack's own commands and
    the fast ones never go to the server."""
    monkeypatch.setenv("CONJURE_HOME", str(tmp_path))
    monkeypatch.delenv("CONJURE_WARM_CLI", raising=False)
    assert warm.enabled()
    (tmp_path / "config.toml").write_text("warm_cli = false\n")
    assert not warm.enabled()
    monkeypatch.setenv("CONJURE_WARM_CLI", "1")
    assert warm.enabled()
    monkeypatch.setenv("CONJURE_WARM_CLI", "0")
    assert not warm.enabled()
    assert warm.wanted(["conjure", "run", "echo hi"])
    for argv in (["up"], ["down"], ["worker"], ["console"], ["--help"], ["run", "-h"], []):
        assert not warm.wanted(["conjure", *argv]), argv
