"""Processes Conjure starts on this host: the embedded stack's and local machines' agents.

Each runs detached in its own session (it outlives whoever started it, as a cloud
machine's agent outlives the control plane), with its output appended to a log file.
Conjure's own processes are started by command line only (`process_command`), never by
importing them: infra/ holds adapters and knows nothing of the processes' code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn


def process_command(*args: str) -> list[str]:
    """The command line of `conjure worker` / `conjure agent --machine-id ID` (one parser:
    worker_agent/commands.py), run by this interpreter without loading the whole CLI."""
    return [sys.executable, "-m", "conjure.worker_agent", *args]


def spawn(cmd: list[str], log_path: Path, env: Mapping[str, str]) -> int:
    """Start cmd detached (its own session, no stdin), output appended to log_path; its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


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


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after timeout seconds."""
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


def exit_process(code: int = 0) -> NoReturn:
    """End this process now with `code`: flush stdout and stderr, then leave without
    CPython's teardown. The Temporal SDK's Rust threads can abort a finalising interpreter
    ("PyGILState_Release: thread state ... must be current", temporalio/sdk-python#300),
    which turns a finished script into a SIGABRT; the `conjure` command and scripts using
    the Python API end with this instead."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
