"""How fast the web console's runs page answers with 10,000 runs, against Temporal's
own list call for the same page measured in the same run.

    .venv/bin/python bench/console.py [--runs 10000] [--repeat 30]

Starts a Temporal dev server (in memory: creating 10,000 workflows in its SQLite file
takes most of an hour on 2 busy cores; Conjure's search attributes) and `conjure console` against it, both on free 127.0.0.1 ports, then
starts `--runs` run workflows the way `conjure run` does (id `run-N`, the search
attributes ConjureRunId/State/MachineType/Command, most in a final state); no worker
runs them, so they stay open (closing 10,000 by timeouts or terminations takes the
busy dev server longer than the benchmark should).
It then times, each `--repeat` times:

* baseline: one `list_workflows` page of 50 (`WorkflowType='RunWorkflow'`), what the
  Temporal Web UI asks for its own workflow list
* the console's runs page data, `GET /api/runs` (50 runs newest first by id, with the
  total count), and the same with filters, an older page, and the HTML page itself

and prints median and 90th percentile milliseconds and each median's ratio to the
baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import free_port, start_seeded, wait_for_starts

CONJURE = str(Path(sys.executable).parent / "conjure")


async def populate(address: str, runs: int) -> float:
    from temporalio.common import (
        SearchAttributePair,
        TypedSearchAttributes,
    )

    from conjure.workflows import keys

    client = await wait_for_starts(address)
    states = ["Complete", "Complete", "Complete", "Failed", "Stopped", "Killed"]
    t0 = time.monotonic()
    sem = asyncio.Semaphore(48)

    async def one(i: int) -> None:
        recent = i > runs - 50
        attrs = TypedSearchAttributes(
            [
                SearchAttributePair(keys.RUN_ID, i),
                SearchAttributePair(keys.STATE, "Running" if recent else states[i % len(states)]),
                SearchAttributePair(keys.MACHINE_TYPE, "gpu" if i % 7 == 0 else "cpu"),
                SearchAttributePair(
                    keys.COMMAND,
                    f"python train.py --lr 0.{i % 9 + 1} --seed {i}"
                    if i % 3
                    else f"bash eval.sh {i}",
                ),
            ]
        )
        async with sem:
            await start_seeded(
                client, id=f"run-{i}", task_queue="bench-nobody-polls", search_attributes=attrs
            )

    await asyncio.gather(*(one(i) for i in range(1, runs + 1)))
    made = time.monotonic() - t0
    # Wait until visibility holds them all.
    while True:
        total = (await client.count_workflows("WorkflowType='RunWorkflow'")).count
        if total >= runs:
            return made
        await asyncio.sleep(1)


async def time_raw(address: str, repeat: int) -> list[float]:
    from temporalio.client import Client

    client = await Client.connect(address)
    out = []
    for _ in range(repeat + 2):
        t0 = time.perf_counter()
        it = client.list_workflows("WorkflowType='RunWorkflow'", page_size=50)
        await it.fetch_next_page(page_size=50)
        assert len(it.current_page or []) == 50
        out.append((time.perf_counter() - t0) * 1000)
    return out[2:]  # the first two warm the connection


def time_http(url: str, repeat: int, check) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat + 2):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
        out.append((time.perf_counter() - t0) * 1000)
        check(body)
    return out[2:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    from conjure.infra import stack
    from conjure.infra.config import Settings

    with tempfile.TemporaryDirectory(prefix="conjure-bench-console-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home, embedded_port=free_port(), embedded_ui_port=free_port())
        server = subprocess.Popen(
            stack.dev_server_command(settings, None, ui=False),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        console = None
        try:
            made = asyncio.run(populate(settings.address, args.runs))
            print(f"started {args.runs} run workflows in {made:.1f}s", file=sys.stderr)
            port = free_port()
            env = {
                **os.environ,
                "CONJURE_HOME": str(home),
                "CONJURE_TEMPORAL_ADDRESS": settings.address,
                "CONJURE_CONSOLE_PORT": str(port),
            }
            console = subprocess.Popen(
                [CONJURE, "console"], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{base}/api/info", timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.2)

            def runs_check(first: int | None):  # type: ignore[no-untyped-def]
                def check(body: bytes) -> None:
                    page = json.loads(body)
                    assert len(page["runs"]) == 50, len(page["runs"])
                    if first is not None:
                        assert page["runs"][0]["id"] == first, page["runs"][0]["id"]

                return check

            raw = asyncio.run(time_raw(settings.address, args.repeat))
            rows = [("Temporal list_workflows, one page of 50 (baseline)", raw)]
            cases = [
                ("console GET /api/runs (newest 50 + total)", "/api/runs", args.runs),
                ("console GET /api/runs?count=0 (newest 50)", "/api/runs?count=0", args.runs),
                (
                    f"console GET /api/runs?before={args.runs // 2} (an older page)",
                    f"/api/runs?before={args.runs // 2}",
                    args.runs // 2 - 1,
                ),
                ("console GET /api/runs?state=Failed", "/api/runs?state=Failed", None),
                ("console GET /api/runs?machine_type=gpu", "/api/runs?machine_type=gpu", None),
                ("console GET /api/runs?q=eval", "/api/runs?q=eval", None),
            ]
            for label, path, first in cases:
                rows.append((label, time_http(base + path, args.repeat, runs_check(first))))
            rows.append(
                (
                    "console GET / (the page's HTML)",
                    time_http(base + "/", args.repeat, lambda b: None),
                )
            )
        finally:
            for proc in (console, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=20)

    base_median = statistics.median(raw)
    print(f"\n{args.runs} runs, {args.repeat} requests each, on this machine "
          f"({os.cpu_count()} cores)\n")  # fmt: skip
    print("| what | median ms | p90 ms | ratio to baseline |")
    print("| --- | ---: | ---: | ---: |")
    for label, ms in rows:
        med = statistics.median(ms)
        p90 = statistics.quantiles(ms, n=10)[-1]
        print(f"| {label} | {med:.1f} | {p90:.1f} | {med / base_median:.2f} |")


if __name__ == "__main__":
    main()
