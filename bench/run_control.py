"""How fast run control acts, against baselines measured in the same run.

    .venv/bin/python bench/run_control.py [--runs 3] [--heartbeat 4] [--no-interrupt]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then
measures on this machine, in pairs:

* stop:        `conjure stop --wait N`, the whole process: started -> exited saying run N
               is Stopped (Saving and Pushing included), for a command that exits at
               SIGTERM; baseline: `docker stop` of a raw container running the same
               command, until `docker wait` returns
* kill:        `conjure kill --wait N`, the whole process -> exited saying it is Killed;
               baseline: `docker kill` + `docker wait`
* the workflow's share of each: the run's history, from the stop/kill signal's event to
               the event that made the state final (Temporal's own event times), against
               the same Docker baseline
* interrupted: the run's agent SIGKILLed -> run N is Interrupted; as a ratio to the
               heartbeat timeout (the bound is 2.0)

The command's own `--wait` is what a person meets: it returns once the state the
command waits for is final, so the figure is the command's process (start-up
included) plus the workflow's work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

from common import CONJURE, Row, bench_stack, markdown, sh

LOOP = "for i in $(seq 1 6000); do echo $i; sleep 0.1; done"


async def _client():  # type: ignore[no-untyped-def]
    from conjure import AsyncConjure

    return AsyncConjure(autostart=False)


async def wait_state(c, run_id: int, states: set[str]) -> dict:  # type: ignore[no-untyped-def]
    from conjure import AsyncRun

    while True:
        st = (await AsyncRun(c, run_id).status()).model_dump(mode="json")
        if st["state"] in states:
            return st
        await asyncio.sleep(0.05)


async def start(c, work: str, env: dict[str, str] | None = None) -> int:  # type: ignore[no-untyped-def]
    run_id = int(sh(CONJURE, "run", "--background", LOOP, cwd=work, env=env).strip())
    await wait_state(c, run_id, {"Running"})
    await asyncio.sleep(1)
    return run_id


async def timed_control(c, verb: str, work: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(the `conjure VERB --wait N` process, its signal -> the final state in history)"""
    final = "Killed" if verb == "kill" else "Stopped"
    run_id = await start(c, work)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        CONJURE, verb, "--wait", str(run_id), stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or f"is {final}" not in err.decode():
        raise SystemExit(f"conjure {verb} --wait {run_id}: exit {proc.returncode}, {err!r}")
    return elapsed, await signal_to_final(c, run_id, verb, final)


async def signal_to_final(c, run_id: int, verb: str, final: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the stop/kill signal's event to the one that made the state final."""
    from temporalio.api.enums.v1 import EventType

    from conjure import AsyncRun
    from conjure.workflows import keys

    await AsyncRun(c, run_id).wait()  # closed: its history is whole
    handle = (await c.client()).get_workflow_handle(keys.run_workflow_id(run_id))
    signalled = None
    async for e in handle.fetch_history_events():
        at = e.event_time.ToMicroseconds() / 1e6
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            if (
                signalled is None
                and e.workflow_execution_signaled_event_attributes.signal_name == verb
            ):
                signalled = at
        elif e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes
            state = fields.indexed_fields.get(keys.STATE.name)
            if signalled is not None and state is not None and final.encode() in state.data:
                return at - signalled
    raise SystemExit(f"run {run_id}: no {verb} signal followed by {final} in its history")


def timed_docker(verb: str, image: str) -> float:
    cid = sh("docker", "run", "-d", "--init", "--network", "host", image, "sh", "-c", LOOP).strip()
    time.sleep(1)
    t0 = time.perf_counter()
    sh("docker", verb, cid)
    sh("docker", "wait", cid)
    elapsed = time.perf_counter() - t0
    sh("docker", "rm", "-f", cid)
    return elapsed


async def timed_interrupt(c, work: str, heartbeat: float) -> float:  # type: ignore[no-untyped-def]
    from conjure.infra.config import get_settings
    from conjure.infra.providers import local

    run_id = await start(c, work, env={"CONJURE_EXECUTE_HEARTBEAT_SECONDS": str(heartbeat)})
    machine = (await wait_state(c, run_id, {"Running"}))["machine_id"]
    rec = local.describe(get_settings(), machine)
    assert rec is not None
    os.kill(local.agent_pid(rec), signal.SIGKILL)
    t0 = time.perf_counter()
    st = await wait_state(c, run_id, {"Interrupted", "Failed", "Complete"})
    assert st["state"] == "Interrupted", st
    return time.perf_counter() - t0  # the pool terminates the machine; the next run gets a new one


async def _measure(settings, work: str, repeats: int, heartbeat: float | None) -> list[Row]:  # type: ignore[no-untyped-def]
    c = await _client()
    rows: dict[str, list[float]] = {k: [] for k in ("docker stop", "conjure stop", "docker kill",
                                                    "conjure kill", "interrupted", "wf stop",
                                                    "wf kill")}  # fmt: skip
    sh(CONJURE, "run", "true", cwd=work)  # warm-up: an idle machine
    for _ in range(repeats):
        for verb in ("stop", "kill"):
            rows[f"docker {verb}"].append(timed_docker(verb, settings.base_image))
            whole, workflow = await timed_control(c, verb, work)
            rows[f"conjure {verb}"].append(whole)
            rows[f"wf {verb}"].append(workflow)
        if heartbeat:
            rows["interrupted"].append(await timed_interrupt(c, work, heartbeat))
    out = [
        Row("`conjure stop --wait N` → says Stopped (command exits at SIGTERM; whole process)",
            "s", rows["conjure stop"], rows["docker stop"], "`docker stop` + `docker wait`",
            goal="≤ grace + 0.5 s (the command takes none of its grace)"),
        Row("`conjure kill --wait N` → says Killed (whole process)", "s", rows["conjure kill"],
            rows["docker kill"], "`docker kill` + `docker wait`", goal="≤ 0.5 s"),
        Row("the run workflow, stop signal → Stopped (history event times)", "s",
            rows["wf stop"], rows["docker stop"], "`docker stop` + `docker wait`"),
        Row("the run workflow, kill signal → Killed (history event times)", "s",
            rows["wf kill"], rows["docker kill"], "`docker kill` + `docker wait`"),
    ]  # fmt: skip
    if heartbeat:
        hb = [heartbeat] * len(rows["interrupted"])
        out.append(Row("agent SIGKILLed → Interrupted", "s", rows["interrupted"], hb,
                       "the heartbeat timeout", goal="≤ 2×"))  # fmt: skip
    return out


def measure(settings, work: str, repeats: int, heartbeat: float | None = None) -> list[Row]:  # type: ignore[no-untyped-def]
    return asyncio.run(_measure(settings, work, repeats, heartbeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heartbeat", type=float, default=4.0)
    ap.add_argument("--no-interrupt", action="store_true")
    args = ap.parse_args()
    with bench_stack() as (settings, work):
        rows = measure(settings, work, args.runs, None if args.no_interrupt else args.heartbeat)
    print(markdown(rows))


if __name__ == "__main__":
    main()
