"""`conjure ls` with many runs in the namespace, against Temporal's own list command.

    .venv/bin/python bench/ls_scale.py [--runs 10000] [--repeats 5]

Seeds RUNS run workflows (type RunWorkflow with Conjure's search attributes and a
cost memo, on a task queue no worker polls, so they stay open and cost nothing to
run), then times `conjure ls` (its default: the newest 50) against
`temporal workflow list --query "WorkflowType='RunWorkflow'" --limit 50`, both whole
processes, in pairs; and the listing alone, in this process (what `conjure ls` does
after its start-up), against one `list_workflows` page of 50.

The runs look as `conjure ls` lists real ones: search attributes ConjureRunId, State
(final states with their exit codes in the memo, the newest few Running),
MachineType, Command, and the cost memo. They are started 64 at a time from one
asyncio client (about 40 starts/s into the stack's SQLite-backed dev server on 2
cores: 10,000 in about 4 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import datetime, timedelta, timezone

from common import CONJURE, TEMPORAL, Row, bench_stack, markdown, start_seeded, timed

# What the seeded runs say, in turn: final states with their exit codes (most runs in a
# namespace this size have ended), and the newest few Running.
FINAL = [("Complete", 0), ("Complete", 0), ("Failed", 1), ("Stopped", 143), ("Killed", 137)]
RUNNING_NEWEST = 5


async def seed(runs: int, first_id: int = 100_000, concurrency: int = 64) -> float:
    """Start `runs` run workflows as `conjure run` would leave them in visibility: id
    `run-N`, type RunWorkflow, the search attributes ConjureRunId/State/MachineType/
    Command, the memo a run keeps (its cost: price, leased_at, released_at; its exit
    code once final), on a task queue no worker polls (so they stay open and cost
    nothing to run). Many starts at once from one client; returns the seconds taken
    until visibility counts them all."""
    from temporalio.common import (
        SearchAttributePair,
        TypedSearchAttributes,
    )

    from conjure import AsyncConjure
    from conjure.workflows import cost, keys

    client = await AsyncConjure(autostart=False).client()
    sem = asyncio.Semaphore(concurrency)
    now = datetime.now(timezone.utc)

    async def one(i: int) -> None:
        run_id = first_id + i
        running = i >= runs - RUNNING_NEWEST
        state, code = ("Running", None) if running else FINAL[i % len(FINAL)]
        leased = now - timedelta(seconds=runs - i + 60)
        memo = cost.memo(0.1, leased, None if running else leased + timedelta(seconds=42))
        if code is not None:
            memo[keys.EXIT_CODE_MEMO] = code
        attrs = TypedSearchAttributes([
            SearchAttributePair(keys.RUN_ID, run_id),
            SearchAttributePair(keys.STATE, state),
            SearchAttributePair(keys.MACHINE_TYPE, "gpu" if i % 7 == 0 else "cpu"),
            SearchAttributePair(keys.COMMAND, f"python train.py --lr 0.{i % 9 + 1} --seed {i}"),
        ])  # fmt: skip
        async with sem:
            await start_seeded(
                client, arg={"bench": True}, id=keys.run_workflow_id(run_id),
                task_queue="conjure-bench-nobody", memo=memo, search_attributes=attrs,
            )  # fmt: skip

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    query = f"WorkflowType='RunWorkflow' AND {keys.RUN_ID.name} >= {first_id}"
    while (await client.count_workflows(query)).count < runs:
        await asyncio.sleep(0.5)
    return time.perf_counter() - t0


async def _in_process(runs: int, repeats: int, top: int) -> tuple[list[float], list[float]]:
    """The CLI's own work without its start-up: the page `conjure ls` prints (as a new
    process reads it: no remembered top id), against one list_workflows page of 50."""
    from conjure import AsyncConjure
    from conjure.cli import listing

    c = AsyncConjure(autostart=False)
    client = await c.client()
    ours, base = [], []
    for _ in range(repeats + 1):  # the first pair warms the connection
        t0 = time.perf_counter()
        it = client.list_workflows("WorkflowType='RunWorkflow'", page_size=50)
        await it.fetch_next_page(page_size=50)
        base.append(time.perf_counter() - t0)
        listing._TOP_HINTS.clear()
        t0 = time.perf_counter()
        page = await c.runs_page(limit=50)
        ours.append(time.perf_counter() - t0)
        assert len(page.runs) == 50 and page.runs[0].run_id == top, page.runs[:1]
    return ours[1:], base[1:]


def measure(settings, work: str, runs: int, repeats: int, first_id: int = 100_000) -> list[Row]:  # type: ignore[no-untyped-def]
    seconds = asyncio.run(seed(runs, first_id))
    top = str(first_id + runs - 1)
    temporal = [TEMPORAL, "workflow", "list", "--address", settings.address,
                "--namespace", settings.temporal_namespace,
                "--query", "WorkflowType='RunWorkflow'", "--limit", "50"]  # fmt: skip
    timed(temporal, work)
    timed([CONJURE, "ls"], work, expect=top)
    ours, base = [], []
    for _ in range(repeats):
        base.append(timed(temporal, work))
        ours.append(timed([CONJURE, "ls"], work, expect=top))
    cold = []  # every command in a process of its own (no warm CLI: a remote cluster's)
    os.environ["CONJURE_WARM_CLI"] = "0"
    try:
        for _ in range(repeats):
            cold.append(timed([CONJURE, "ls"], work, expect=top))
    finally:
        del os.environ["CONJURE_WARM_CLI"]
    inner, raw = asyncio.run(_in_process(runs, 3 * repeats, int(top)))
    return [
        Row(f"`conjure ls` with {runs:,} runs in the namespace (whole process)", "s", ours,
            base, "`temporal workflow list --limit 50`", goal="≤ 0.5 s",
            note=f"seeding {runs:,} run workflows took {seconds:.1f} s "
                 f"({runs / seconds:.0f} starts/s from one client)"),
        Row(f"`conjure ls` with {runs:,} runs, warm CLI off (`CONJURE_WARM_CLI=0`)", "s",
            cold, base, "`temporal workflow list --limit 50`", goal="≤ 0.5 s"),
        Row(f"`conjure ls` with {runs:,} runs, the listing alone (in process, no start-up)", "s",
            inner, raw, "one `list_workflows` page of 50"),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with bench_stack() as (settings, work):
        rows = measure(settings, work, args.runs, args.repeats)
    print(markdown(rows))


if __name__ == "__main__":
    main()
