"""How fast run control acts, against baselines measured in the same run.

    .venv/bin/python bench/run_control.py [--runs 3] [--heartbeat 4]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then
measures on this machine:

* stop:        `conjure stop N` sent -> run N is Stopped (Saving and Pushing included),
               for a command that exits at SIGTERM; baseline: `docker stop` of a raw
               container running the same command
* kill:        `conjure kill N` sent -> run N is Killed; baseline: `docker kill`
* interrupted: the run's agent SIGKILLed -> run N is Interrupted; as a ratio to the
               heartbeat timeout (the issue's bound is 2.0)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONJURE = str(Path(sys.executable).parent / "conjure")
LOOP = "for i in $(seq 1 6000); do echo $i; sleep 0.1; done"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*cmd: str, cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


async def status(run_id: int) -> dict:
    from conjure.cli.api import AsyncConjure, AsyncRun
    from conjure.infra.config import get_settings

    st = await AsyncRun(AsyncConjure(get_settings(), autostart=False), run_id).status()
    return st.model_dump(mode="json")


async def wait_state(run_id: int, states: set[str]) -> dict:
    while True:
        st = await status(run_id)
        if st["state"] in states:
            return st
        await asyncio.sleep(0.05)


def start(work: str, env: dict[str, str] | None = None) -> int:
    run_id = int(sh(CONJURE, "run", "--background", LOOP, cwd=work, env=env).strip())
    asyncio.run(wait_state(run_id, {"Running"}))
    time.sleep(1)
    return run_id


def timed_control(verb: str, work: str) -> float:
    run_id = start(work)
    t0 = time.perf_counter()
    sh(CONJURE, verb, str(run_id))
    st = asyncio.run(wait_state(run_id, {"Stopped", "Killed", "Failed", "Complete"}))
    assert st["state"] in ("Stopped", "Killed"), st
    return time.perf_counter() - t0


def timed_docker(verb: str, image: str) -> float:
    cid = sh("docker", "run", "-d", "--init", "--network", "host", image, "sh", "-c", LOOP).strip()
    time.sleep(1)
    t0 = time.perf_counter()
    sh("docker", verb, cid)
    sh("docker", "wait", cid)
    elapsed = time.perf_counter() - t0
    sh("docker", "rm", "-f", cid)
    return elapsed


def timed_interrupt(work: str, heartbeat: float) -> float:
    from conjure.infra.config import get_settings
    from conjure.infra.providers import local

    run_id = start(work, env={"CONJURE_EXECUTE_HEARTBEAT_SECONDS": str(heartbeat)})
    machine = asyncio.run(status(run_id))["machine_id"]
    rec = local.describe(get_settings(), machine)
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    t0 = time.perf_counter()
    st = asyncio.run(wait_state(run_id, {"Interrupted", "Failed", "Complete"}))
    assert st["state"] == "Interrupted", st
    return time.perf_counter() - t0  # the pool terminates the machine; the next run gets a new one


def med(xs: list[float]) -> str:
    return f"{min(xs):7.2f} {statistics.median(xs):7.2f} {max(xs):7.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heartbeat", type=float, default=4.0)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    os.environ.update(
        CONJURE_HOME=str(home),
        CONJURE_EMBEDDED_PORT=str(free_port()),
        CONJURE_EMBEDDED_UI_PORT=str(free_port()),
        CONJURE_IDLE_TIMEOUT_SECONDS="600",
    )
    from conjure.infra import stack
    from conjure.infra.config import get_settings
    from conjure.infra.providers import local

    settings = get_settings()
    work = tempfile.mkdtemp(prefix="conjure-bench-cwd-")
    asyncio.run(stack.up(settings))
    rows: dict[str, list[float]] = {k: [] for k in ("docker stop", "conjure stop", "docker kill",
                                                    "conjure kill", "interrupted")}  # fmt: skip
    try:
        sh(CONJURE, "run", "true", cwd=work)  # warm-up: an idle machine
        for _ in range(args.runs):
            rows["docker stop"].append(timed_docker("stop", settings.base_image))
            rows["conjure stop"].append(timed_control("stop", work))
            rows["docker kill"].append(timed_docker("kill", settings.base_image))
            rows["conjure kill"].append(timed_control("kill", work))
            rows["interrupted"].append(timed_interrupt(work, args.heartbeat))
    finally:
        for rec in local.list_instances(settings):
            local.terminate(settings, rec.machine_id)
        stack.down(settings)

    print(f"run control, {args.runs} runs each ({os.cpu_count()} cores); seconds")
    print(f"{'':44} {'min':>7} {'median':>7} {'max':>7}   ratio (median)")
    for label, base in (("stop", "docker stop"), ("kill", "docker kill")):
        b = statistics.median(rows[base])
        print(f"{'baseline ' + base:44} {med(rows[base])}   1.00")
        c = rows[f"conjure {label}"]
        print(
            f"{'conjure ' + label + ' -> final state':44} {med(c)}   {statistics.median(c) / b:.2f}"
        )
    i = rows["interrupted"]
    print(f"{f'agent SIGKILL -> Interrupted (heartbeat {args.heartbeat:g}s)':44} {med(i)}   "
          f"{statistics.median(i) / args.heartbeat:.2f} x heartbeat timeout")  # fmt: skip
    print(json.dumps({k: [round(x, 3) for x in v] for k, v in rows.items()}))


if __name__ == "__main__":
    main()
