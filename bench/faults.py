"""The fault campaign's figures (issue 15), against baselines measured in the same run.

    .venv/bin/python bench/faults.py [--heartbeat 5] [--runs 60] [--limit 4] [--lines 400000]
                                     [--status-repeat 5] [--only status]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then prints:

* interrupted:  an agent SIGKILLed under a running run (not restarted) -> the run is
                Interrupted; as a ratio to the heartbeat timeout (the bound is 2.0)
* limit:        RUNS runs submitted at once from two submitters (the CLI and the Python
                API) under max_concurrent_runs=LIMIT: the most programs running at
                the same instant (Docker's running run containers, sampled every 0.05 s);
                as a ratio to the limit (never above 1.0)
* flood memory: the agent's peak resident memory (VmHWM) while it stores a run printing
                LINES lines at once; baseline: the same agent's peak after a quiet run
* flood:        execute attempts for the flood run (1: no retry) and the dropped count's
                exactness (the notes' sum against the lines missing from the log)
* status:       whole `conjure status` processes after the control worker was SIGKILLed
                (nothing restarts it): at once, while the server still counts its
                pollers, and after they went stale; for an open and a finished run;
                baseline: the same command with the worker alive (the goal: within 3 s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from common import CONJURE, Row, bench_stack, load_note, markdown, sh, submit_from_two

STALE_ANSWERS: list[int] = []  # window samples answered from history (the rest: the error)


def _api():  # type: ignore[no-untyped-def]
    from conjure import AsyncConjure

    return AsyncConjure(autostart=False)


async def wait_state(c, run_id: int, pred, poll: float = 0.1) -> dict:  # type: ignore[no-untyped-def]
    from conjure import AsyncRun

    while True:
        try:
            st = (await AsyncRun(c, run_id).status()).model_dump(mode="json")
        except Exception:
            st = {"state": "?"}
        if pred(st):
            return st
        await asyncio.sleep(poll)


def submit(cmd: str, work: str) -> int:
    return int(sh(CONJURE, "run", "--background", cmd, cwd=work).strip())


def agent_pid(settings, machine_id: str) -> int:  # type: ignore[no-untyped-def]
    from conjure.infra.providers import local

    rec = local.describe(settings, machine_id)
    assert rec is not None
    return local.agent_pid(rec)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def interrupted(settings, work: str, heartbeat: float) -> float:  # type: ignore[no-untyped-def]
    c = _api()
    n = submit("sleep 600", work)
    st = await wait_state(c, n, lambda s: s["state"] == "Running")
    await asyncio.sleep(1)
    os.kill(agent_pid(settings, st["machine_id"]), signal.SIGKILL)
    t0 = time.monotonic()
    st = await wait_state(c, n, lambda s: s["state"] not in ("Running", "?"), poll=0.05)
    took = time.monotonic() - t0
    if st["state"] != "Interrupted":
        raise SystemExit(f"run {n} ended {st['state']}, not Interrupted")
    return took


def limit_peak(settings, work: str, runs: int) -> int:  # type: ignore[no-untyped-def]
    """The most programs Docker reported running at the same instant while RUNS runs of
    `sleep 3`, half from the CLI and half from the Python API, went through (the suite's
    tests/conftest.py submit_from_two)."""
    return submit_from_two(settings, "sleep 3; echo ok", runs, Path(work))[1]


async def flood(settings, work: str, lines: int) -> tuple[float, float, list[int], int, int]:  # type: ignore[no-untyped-def]
    """(agent peak MiB after a quiet run, after the flood, execute attempts, dropped by
    the notes, lines missing from the log)."""
    from conjure.infra.logs import LogReader
    from conjure.infra.store import open_store
    from conjure.infra.temporal import make_client

    c = _api()
    quiet = submit("echo quiet", work)
    st = await wait_state(c, quiet, lambda s: s["state"] == "Complete")
    pid = agent_pid(settings, st["machine_id"])
    base = peak_rss_mib(pid)
    n = submit(f"seq 1 {lines}", work)
    st = await wait_state(c, n, lambda s: s["state"] in ("Complete", "Failed", "Interrupted"))
    if agent_pid(settings, st["machine_id"]) != pid:
        raise SystemExit("the flood ran on another machine: the memory figure would be wrong")
    peak = peak_rss_mib(pid)
    client = await make_client(settings)
    attempts: list[int] = []
    scheduled: set[int] = set()
    async for ev in client.get_workflow_handle(f"run-{n}").fetch_history_events():
        if ev.HasField("activity_task_scheduled_event_attributes"):
            if ev.activity_task_scheduled_event_attributes.activity_type.name == "execute":
                scheduled.add(ev.event_id)
        if ev.HasField("activity_task_started_event_attributes"):
            started = ev.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempts.append(started.attempt)
    store = open_store(settings.store, settings)
    got = list(LogReader(store, n).poll())
    kept = sum(1 for ln in got if ln.stream == "o")
    noted = sum(
        int(m.group(1))
        for ln in got
        if ln.stream == "c" and (m := re.match(r"\[conjure\] (\d+) log line", ln.text))
    )
    return base, peak, attempts, noted, lines - kept


def _status_once(
    run_id: int, env: dict[str, str], expect_code: int | tuple[int, ...]
) -> tuple[float, str]:
    """Wall time of one whole `conjure status` process, and its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [CONJURE, "status", str(run_id)], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env={**os.environ, **env},
    )  # fmt: skip
    took = time.perf_counter() - t0
    codes = expect_code if isinstance(expect_code, tuple) else (expect_code,)
    if proc.returncode not in codes:
        raise SystemExit(
            f"status {run_id}: exit {proc.returncode}, not {expect_code}\n{proc.stdout}{proc.stderr}"
        )
    return took, proc.stderr.strip()


async def status_without_worker(settings, work: str, repeat: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """`conjure status` of an open and of a finished run: with the control worker alive
    (the baseline); right after it was SIGKILLed, while the server still counts its
    pollers (answered from the run's history, marked stale); and once they went stale
    (open run: the one-line error; finished run: its final status)."""
    from conjure.cli.liveness import recent_pollers
    from conjure.infra import stack
    from conjure.infra.temporal import make_client

    c = _api()
    done = submit("echo done", work)
    await wait_state(c, done, lambda s: s["state"] == "Complete")
    n = submit("sleep 900", work)
    await wait_state(c, n, lambda s: s["state"] == "Running")
    prod = {"CONJURE_TEMPORAL_ADDRESS": settings.address}  # no command restarts a worker
    out: dict[str, list[float]] = {k: [] for k in ("live", "window", "window_done", "gone",
                                                   "gone_done")}  # fmt: skip
    print("status: the live worker's baseline", flush=True)
    for _ in range(repeat):
        out["live"].append(_status_once(n, prod, 0)[0])
    client = await make_client(settings)
    # A workflow task just before the kill: the worker's last poll is fresh, so the
    # server counts it alive for about POLLER_FRESH_SECONDS after the kill.
    submit("true", work)
    await asyncio.sleep(1)
    stack.kill_for_tests(settings, "worker")
    killed = time.monotonic()
    print("status: the worker SIGKILLed", flush=True)
    for _ in range(repeat):
        if not await recent_pollers(client, settings.control_task_queue):
            break
        # The stale answer from history, or (when the server itself says it saw no
        # poller for the run's query) the one-line error: either within the goal.
        took, err = _status_once(n, prod, (0, 1))
        if "possibly stale" in err:
            STALE_ANSWERS.append(1)
        elif "no control worker is polling" not in err:
            raise SystemExit(f"neither the stale answer nor the error: {err!r}")
        out["window"].append(took)
        out["window_done"].append(_status_once(done, prod, 0)[0])
    if not out["window"] or not await recent_pollers(client, settings.control_task_queue):
        raise SystemExit("the pollers went stale before the window was measured")
    print(f"window measured {time.monotonic() - killed:.0f}s after the kill", flush=True)
    while await recent_pollers(client, settings.control_task_queue):
        await asyncio.sleep(2)
    print(f"pollers stale {time.monotonic() - killed:.0f}s after the kill", flush=True)
    for _ in range(repeat):
        out["gone"].append(_status_once(n, prod, 1)[0])
        out["gone_done"].append(_status_once(done, prod, 0)[0])
    sh(CONJURE, "up")
    sh(CONJURE, "kill", str(n))
    return out


def _status_rows(st: dict[str, list[float]]) -> list[Row]:
    live = st["live"]
    return [
        Row("`status`, open run, worker SIGKILLed, pollers still fresh", "s",
            st["window"], live, "`status` with a live worker", goal="≤ 3 s",
            note=f"{len(STALE_ANSWERS)} of {len(st['window'])} answered from history "
            "(marked stale), the rest the one-line error"),
        Row("`status`, finished run, worker SIGKILLed, pollers still fresh", "s",
            st["window_done"], live, "`status` with a live worker", goal="≤ 3 s"),
        Row("`status`, open run, pollers stale (one-line error, exit 1)", "s",
            st["gone"], live, "`status` with a live worker", goal="≤ 3 s"),
        Row("`status`, finished run, pollers stale (its final status)", "s",
            st["gone_done"], live, "`status` with a live worker", goal="≤ 3 s"),
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--lines", type=int, default=400_000)
    p.add_argument("--status-repeat", type=int, default=5)
    p.add_argument("--only", choices=["status", "limit"], help="only these rows")
    args = p.parse_args()
    if args.only == "limit":
        with bench_stack(CONJURE_MAX_CONCURRENT_RUNS=str(args.limit)) as (settings, work):
            most = limit_peak(settings, work, args.runs)
        print(markdown([Row(f"most programs running at once ({args.runs} runs, 2 submitters)",
                            "runs", [float(most)], [float(args.limit)], "max_concurrent_runs",
                            goal="≤ 1.0 x")]))  # fmt: skip
        print(f"\n{load_note()}")
        return
    if args.only == "status":
        with bench_stack() as (settings, work):
            st = asyncio.run(status_without_worker(settings, work, args.status_repeat))
        print(markdown(_status_rows(st)))
        print(f"\n{load_note()}")
        return
    with bench_stack(
        CONJURE_MAX_CONCURRENT_RUNS=str(args.limit),
        CONJURE_EXECUTE_HEARTBEAT_SECONDS=str(args.heartbeat),
        CONJURE_LOG_LINES_PER_WINDOW="1000",
        CONJURE_LOG_WINDOW_SECONDS="1",
    ) as (settings, work):
        base, peak, attempts, noted, missing = asyncio.run(flood(settings, work, args.lines))
        took = asyncio.run(interrupted(settings, work, args.heartbeat))
        most = limit_peak(settings, work, args.runs)
        st = asyncio.run(status_without_worker(settings, work, args.status_repeat))
    rows = [
        Row("time to Interrupted (agent SIGKILLed)", "s", [took], [args.heartbeat],
            "heartbeat timeout", goal="≤ 2.0 x"),
        Row(f"most programs running at once ({args.runs} runs, 2 submitters)", "runs",
            [float(most)], [float(args.limit)], "max_concurrent_runs", goal="≤ 1.0 x"),
        Row(f"agent peak memory, {args.lines:,}-line flood", "MiB", [peak], [base],
            "after a quiet run",
            note=f"execute attempts {attempts}; dropped lines by the notes {noted:,}, "
            f"missing from the log {missing:,} ({'exact' if noted == missing else 'NOT exact'})"),
    ]  # fmt: skip
    rows += _status_rows(st)
    print(markdown(rows))
    print(f"\n{load_note()}")


if __name__ == "__main__":
    main()
