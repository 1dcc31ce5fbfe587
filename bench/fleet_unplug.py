"""A remote machine unplugged mid-run (issue 13, item 5c): how long until its run is
Interrupted, as a ratio to the heartbeat timeout (the goal: under 2.0).

    .venv/bin/python bench/fleet_unplug.py [--heartbeat 6] [--repeat 3]

Needs root and the test hosts' tools (tests/hosts.py). Builds three test hosts and the
stack of tests/fleet_stack.py, then REPEAT times: a run on a host, the host's link cut
(veth down) once the run is Running, the time from the cut to the Interrupted state
change the run records; the link back up, and the host free again before the next.
The baseline is the heartbeat timeout itself (execute_heartbeat_seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import Row, load_note, markdown


async def unplugged_once(fleet, proj: Path) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    from conjure import AsyncConjure
    from conjure.workflows.models import RunState
    from tests.fleet_stack import host_line, until

    c = AsyncConjure(fleet.settings)
    run = await c.run("sleep 600", machine_type="fleet", cwd=proj)
    st = await until(run, {RunState.RUNNING})
    host = fleet.host_of(st.machine_id)
    host.unplug()
    cut = time.time()
    try:
        end = await until(run, {RunState.INTERRUPTED, RunState.COMPLETE, RunState.FAILED})
    finally:
        host.plug()
    if end.state != RunState.INTERRUPTED:
        raise SystemExit(f"run {end.run_id} ended {end.state.value}: {end.reason}")
    deadline = time.monotonic() + 240
    while host_line(fleet, host).split()[-1] != "free":  # back in service
        if time.monotonic() > deadline:
            raise SystemExit(f"{host.address} did not come back: {host_line(fleet, host)}")
        await asyncio.sleep(2)
    return end.timeline[-1].at.timestamp() - cut, end.reason


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heartbeat", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from tests.cli.test_run_e2e import git
    from tests.fleet_stack import fleet_stack

    work = Path(tempfile.mkdtemp(prefix="conjure-bench-fleet-"))
    proj = work / "proj"
    proj.mkdir()
    (proj / "x.txt").write_text("x\n")
    git(proj, "init", "-q")
    git(proj, "add", ".")
    git(proj, "commit", "-q", "-m", "bench")
    took: list[float] = []
    with fleet_stack(work / "fleet", heartbeat=args.heartbeat) as fleet:
        for i in range(args.repeat):
            t, reason = asyncio.run(unplugged_once(fleet, proj))
            print(f"unplug {i + 1}: Interrupted after {t:.1f}s ({reason})", flush=True)
            took.append(t)
    rows = [
        Row(
            "unplugged host -> its run Interrupted",
            "s",
            took,
            [args.heartbeat] * len(took),
            "heartbeat timeout",
            goal="< 2.0",
            note=load_note(),
        )  # fmt: skip
    ]
    print(markdown(rows))


if __name__ == "__main__":
    main()
