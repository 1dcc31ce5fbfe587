"""Many short runs under a concurrency limit, against raw `docker run` at the same limit.

    .venv/bin/python bench/throughput.py [--runs 60] [--limit 4] [--repeats 1]

Starts its own stack with `max_concurrent_runs = LIMIT`, makes LIMIT idle machines
(a warm-up of LIMIT runs), then submits RUNS runs of `sleep 1` from one API process
(AsyncConjure) at once and waits for all: wall time from the first submission to the
last final state. Baseline, in the same run: RUNS `docker run --rm --network host
<base> sleep 1`, LIMIT at a time. The ratio is baseline time / Conjure's time (the
share of raw Docker's throughput Conjure reaches).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import Row, bench_stack, markdown


def raw_docker(image: str, runs: int, limit: int) -> float:
    cmd = ["docker", "run", "--rm", "--network", "host", image, "sleep", "1"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=limit) as pool:
        for rc in pool.map(lambda _: subprocess.run(cmd, capture_output=True).returncode,
                           range(runs)):  # fmt: skip
            if rc != 0:
                raise SystemExit("docker run sleep 1 failed")
    return time.perf_counter() - t0


async def conjure_runs(work: str, runs: int) -> float:
    from conjure import AsyncConjure

    c = AsyncConjure()
    await c.client()
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(c.run("sleep 1", cwd=Path(work)) for _ in range(runs)))
    done = await asyncio.gather(*(h.wait() for h in handles))
    elapsed = time.perf_counter() - t0
    bad = [s.run_id for s in done if s.state.value != "Complete"]
    if bad:
        raise SystemExit(f"runs {bad} did not complete")
    return elapsed


def measure(runs: int, limit: int, repeats: int) -> Row:
    ours, base = [], []
    with bench_stack(CONJURE_MAX_CONCURRENT_RUNS=str(limit)) as (settings, work):
        asyncio.run(conjure_runs(work, limit))  # warm-up: LIMIT idle machines
        for _ in range(repeats):
            base.append(raw_docker(settings.base_image, runs, limit))
            ours.append(asyncio.run(conjure_runs(work, runs)))
    # As speeds (runs per second), so the ratio reads "share of raw Docker's throughput".
    return Row(f"{runs} runs of `sleep 1`, `max_concurrent_runs = {limit}`, one API process",
               "runs/s", [runs / t for t in ours], [runs / t for t in base],
               f"{runs} × `docker run --rm … sleep 1`, {limit} at a time",
               higher_is_better=True, goal="≥ 0.8")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(markdown([measure(args.runs, args.limit, args.repeats)]))


if __name__ == "__main__":
    main()
