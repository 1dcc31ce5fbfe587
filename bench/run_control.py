"""How fast run control acts, against baselines measured in the same run.

    .venv/bin/python bench/run_control.py [--runs 3] [--heartbeat 4] [--no-interrupt]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then
measures on this machine, in pairs:

* stop:        `conjure stop N` started -> run N is Stopped (Saving and Pushing included),
               for a command that exits at SIGTERM; baseline: `docker stop` of a raw
               container running the same command, until `docker wait` returns
* kill:        `conjure kill N` started -> run N is Killed; baseline: `docker kill`
* interrupted: the run's agent SIGKILLed -> run N is Interrupted; as a ratio to the
               heartbeat timeout (the bound is 2.0)

The final state is awaited on one open client (the run workflow's result, a long
poll), so the figure is the command's process plus the workflow's work, not the
benchmark's own polling.
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


async def timed_control(c, verb: str, work: str) -> float:  # type: ignore[no-untyped-def]
    from conjure import AsyncRun

    run_id = await start(c, work)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(CONJURE, verb, str(run_id))
    st = await AsyncRun(c, run_id).wait()  # a Stopped/Killed run fails its workflow
    elapsed = time.perf_counter() - t0
    if await proc.wait() != 0 or st.state.value not in ("Stopped", "Killed"):
        raise SystemExit(f"conjure {verb} {run_id}: exit {proc.returncode}, {st.state}")
    return elapsed


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
                                                    "conjure kill", "interrupted")}  # fmt: skip
    sh(CONJURE, "run", "true", cwd=work)  # warm-up: an idle machine
    for _ in range(repeats):
        rows["docker stop"].append(timed_docker("stop", settings.base_image))
        rows["conjure stop"].append(await timed_control(c, "stop", work))
        rows["docker kill"].append(timed_docker("kill", settings.base_image))
        rows["conjure kill"].append(await timed_control(c, "kill", work))
        if heartbeat:
            rows["interrupted"].append(await timed_interrupt(c, work, heartbeat))
    out = [
        Row("`conjure stop N` → Stopped (command exits at SIGTERM)", "s", rows["conjure stop"],
            rows["docker stop"], "`docker stop` + `docker wait`",
            goal="≤ grace + 0.5 s (the command takes none of its grace)"),
        Row("`conjure kill N` → Killed", "s", rows["conjure kill"], rows["docker kill"],
            "`docker kill` + `docker wait`", goal="≤ 0.5 s"),
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
