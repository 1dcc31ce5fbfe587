"""What one run costs the Temporal server: history events and billable actions.

    .venv/bin/python bench/run_cost.py [--runs 5]

Runs `conjure run "echo hi"` RUNS times on a warm machine of a throw-away stack, then
reads the histories: the run workflow's own, and the growth of the pool's and the
run-id counter's histories over those runs (their share per run). Actions are
counted as Temporal Cloud bills them, from the history: a workflow started, each
activity scheduled, timer started, signal received (each signal sent once),
update accepted, search-attribute or memo upsert, child workflow started. Queries
are actions too but leave no history: `conjure run` and `conjure logs -f` ask the
run's status while they follow it (see README, Running big).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections import Counter

from common import CONJURE, bench_stack, sh

ACTION_EVENTS = {
    "WorkflowExecutionStarted",
    "ActivityTaskScheduled",
    "TimerStarted",
    "WorkflowExecutionSignaled",
    "WorkflowExecutionUpdateAccepted",
    "UpsertWorkflowSearchAttributes",
    "WorkflowPropertiesModified",
    "StartChildWorkflowExecutionInitiated",
}


async def history(client, workflow_id: str) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Event types of every run of workflow_id (continue-as-new chains included)."""
    kinds: Counter[str] = Counter()
    async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        h = await client.get_workflow_handle(workflow_id, run_id=wf.run_id).fetch_history()
        for e in h.events:
            kinds[_name(e.event_type)] += 1
    return kinds


def _name(event_type: int) -> str:
    from temporalio.api.enums.v1 import EventType

    return "".join(p.capitalize() for p in EventType.Name(event_type).split("_")[2:])


def actions(kinds: Counter[str]) -> int:
    return sum(n for k, n in kinds.items() if k in ACTION_EVENTS)


async def _measure(runs: int, run_ids: list[int], before: dict[str, Counter[str]]) -> dict:  # type: ignore[type-arg]
    from conjure import AsyncConjure
    from conjure.workflows import keys

    client = await AsyncConjure(autostart=False).client()
    per_run = [await history(client, keys.run_workflow_id(n)) for n in run_ids]
    out: dict = {"run": per_run[len(per_run) // 2]}  # type: ignore[type-arg]
    for name, wid in (("pool", keys.POOL_WORKFLOW_ID), ("counter", keys.COUNTER_WORKFLOW_ID)):
        after = await history(client, wid)
        grown = after - before[name]
        out[name] = Counter({k: v / runs for k, v in grown.items()})
    return out


async def _snapshot() -> dict[str, Counter[str]]:
    from conjure import AsyncConjure
    from conjure.workflows import keys

    client = await AsyncConjure(autostart=False).client()
    return {
        "pool": await history(client, keys.POOL_WORKFLOW_ID),
        "counter": await history(client, keys.COUNTER_WORKFLOW_ID),
    }


def measure(settings, work: str, runs: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    sh(CONJURE, "run", "echo hi", cwd=work)  # warm-up: an idle machine
    before = asyncio.run(_snapshot())
    ids = []
    for _ in range(runs):
        err = subprocess.run([CONJURE, "run", "echo hi"], cwd=work, capture_output=True,
                             text=True).stderr  # fmt: skip
        ids.append(int(err.split("Casting run #", 1)[1].split("…")[0]))
    return asyncio.run(_measure(runs, ids, before))


def table(cost: dict) -> str:  # type: ignore[type-arg]
    lines = [
        "| workflow | history events per run | actions per run | largest event kinds |",
        "| --- | ---: | ---: | --- |",
    ]
    total_e = total_a = 0.0
    for name in ("run", "pool", "counter"):
        kinds = cost[name]
        events, acts = sum(kinds.values()), actions(kinds)
        total_e += events
        total_a += acts
        top = ", ".join(f"{k} {round(v, 1):g}" for k, v in kinds.most_common(4))
        lines.append(f"| {name} | {round(events, 1):g} | {round(acts, 1):g} | {top} |")
    lines.append(f"| **total** | **{round(total_e, 1):g}** | **{round(total_a, 1):g}** | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with bench_stack() as (settings, work):
        cost = measure(settings, work, args.runs)
    print(table(cost))


if __name__ == "__main__":
    main()
