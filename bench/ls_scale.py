"""`conjure ls` with many runs in the namespace, against Temporal's own list command.

    .venv/bin/python bench/ls_scale.py [--runs 10000] [--repeats 5]

Seeds RUNS run workflows (type RunWorkflow with Conjure's search attributes and a
cost memo, on a task queue no worker polls, so they stay open and cost nothing to
run), then times `conjure ls` (its default: the newest 50) against
`temporal workflow list --query "WorkflowType='RunWorkflow'" --limit 50`, both whole
processes, in pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import CONJURE, TEMPORAL, Row, bench_stack, markdown, timed


async def seed(runs: int, first_id: int = 100_000, concurrency: int = 16) -> float:
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from conjure import AsyncConjure
    from conjure.workflows import cost, keys

    client = await AsyncConjure(autostart=False).client()
    sem = asyncio.Semaphore(concurrency)
    states = ["Complete", "Failed", "Running", "Stopped"]

    async def one(i: int) -> None:
        run_id = first_id + i
        async with sem:
            await client.start_workflow(
                "RunWorkflow",
                {"bench": True},
                id=keys.run_workflow_id(run_id),
                task_queue="conjure-bench-nobody",
                memo=cost.memo(0.1, None, None),
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(keys.RUN_ID, run_id),
                    SearchAttributePair(keys.STATE, states[i % len(states)]),
                    SearchAttributePair(keys.MACHINE_TYPE, "cpu"),
                    SearchAttributePair(keys.COMMAND, f"python train.py --seed {i}"),
                ]),
            )  # fmt: skip

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(runs)))
    return time.perf_counter() - t0


def measure(settings, work: str, runs: int, repeats: int) -> Row:  # type: ignore[no-untyped-def]
    seconds = asyncio.run(seed(runs))
    temporal = [TEMPORAL, "workflow", "list", "--address", settings.address,
                "--namespace", settings.temporal_namespace,
                "--query", "WorkflowType='RunWorkflow'", "--limit", "50"]  # fmt: skip
    timed(temporal, work)
    timed([CONJURE, "ls"], work)
    ours, base = [], []
    for _ in range(repeats):
        base.append(timed(temporal, work))
        ours.append(timed([CONJURE, "ls"], work))
    return Row(f"`conjure ls` with {runs:,} runs in the namespace (whole process)", "s", ours,
               base, "`temporal workflow list --limit 50`", goal="≤ 0.5 s",
               note=f"seeding {runs:,} run workflows took {seconds:.1f} s "
                    f"({runs / seconds:.0f} starts/s from one client)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with bench_stack() as (settings, work):
        row = measure(settings, work, args.runs, args.repeats)
    print(markdown([row]))


if __name__ == "__main__":
    main()
