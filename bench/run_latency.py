"""Whole-process latency of `conjure run "echo hi"`, against raw `docker run`.

    .venv/bin/python bench/run_latency.py [--runs 5]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then
measures, in this one process and on this machine:

* baseline: `docker run --rm --network host <base image> echo hi`
* warm:     `conjure run "echo hi"` on an idle machine (reused)
* new:      `conjure run "echo hi"` on a new machine (a machine type of its own each time,
            so the pool must provision: start an agent, wait for it, then run)

and prints min/median/max of each and their ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or "hi" not in proc.stdout:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return elapsed


def stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    types = "\n".join(
        f"[machine_types.bench-new-{i}]\nvcpus = 2\nmemory_gb = 4\n" for i in range(args.runs)
    )
    (home / "config.toml").write_text(types)
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
    image = settings.base_image
    work = tempfile.mkdtemp(prefix="conjure-bench-cwd-")
    asyncio.run(stack.up(settings))
    try:
        # Warm-up: a first run makes the idle machine and loads every cache.
        timed([CONJURE, "run", "echo hi"], work)
        timed(["docker", "run", "--rm", "--network", "host", image, "echo", "hi"], work)
        baseline, warm, new = [], [], []
        for i in range(args.runs):
            baseline.append(
                timed(["docker", "run", "--rm", "--network", "host", image, "echo", "hi"], work)
            )
            warm.append(timed([CONJURE, "run", "echo hi"], work))
            new.append(timed([CONJURE, "run", "-t", f"bench-new-{i}", "echo hi"], work))
    finally:
        for rec in local.list_instances(settings):
            local.terminate(settings, rec.machine_id)
        stack.down(settings)

    b = stats(baseline)
    print(f"conjure run latency, {args.runs} runs each ({os.cpu_count()} cores)")
    print(f"{'':34} {'min':>7} {'median':>7} {'max':>7}   ratio to baseline (median)")
    print(f"{'baseline docker run --rm echo hi':34} {b[0]:7.3f} {b[1]:7.3f} {b[2]:7.3f}   1.00")
    for label, xs in (("conjure run, warm idle machine", warm), ("conjure run, new machine", new)):
        s = stats(xs)
        print(f"{label:34} {s[0]:7.3f} {s[1]:7.3f} {s[2]:7.3f}   {s[1] / b[1]:.2f}")
    print("(seconds; whole-process wall time measured from this script)")


if __name__ == "__main__":
    main()
