"""Whole-process latency of `conjure run "echo hi"`, against raw `docker run`.

    .venv/bin/python bench/run_latency.py [--runs 5]

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, then
measures, in this one process and on this machine, in pairs:

* baseline: `docker run --rm --network host <base image> echo hi`
* warm:     `conjure run "echo hi"` on an idle machine (reused)
* new:      `conjure run "echo hi"` on a new machine (a machine type of its own each time,
            so the pool must provision: start an agent, wait for it, then run)

and prints min/median/max of each and the ratios to the baseline. `--help-too` adds
`conjure --help` against `python -c pass` (the CLI's start-up alone).
"""

from __future__ import annotations

import argparse
import sys

from common import CONJURE, Row, bench_stack, markdown, timed


def machine_types(n: int) -> str:
    """config.toml: a machine type per new-machine run, so each one provisions."""
    return "\n".join(f"[machine_types.bench-new-{i}]\nvcpus = 2\nmemory_gb = 4\n" for i in range(n))


def measure_startup(repeats: int) -> Row:
    ours, base = [], []
    for _ in range(repeats):
        base.append(timed([sys.executable, "-c", "pass"]))
        ours.append(timed([CONJURE, "--help"]))
    return Row("`conjure --help` (CLI start-up)", "s", ours, base, "`python -c pass`",
               goal="(part of the run row)")  # fmt: skip


def measure(settings, work: str, repeats: int, new: bool = True) -> list[Row]:  # type: ignore[no-untyped-def]
    """Needs a stack whose config.toml has machine_types(repeats)."""
    image = settings.base_image
    docker = ["docker", "run", "--rm", "--network", "host", image, "echo", "hi"]
    # Warm-up: a first run makes the idle machine and loads every cache.
    timed([CONJURE, "run", "echo hi"], work, expect="hi")
    timed(docker, work, expect="hi")
    baseline, warm, fresh = [], [], []
    for i in range(repeats):
        baseline.append(timed(docker, work, expect="hi"))
        warm.append(timed([CONJURE, "run", "echo hi"], work, expect="hi"))
        if new:
            fresh.append(timed([CONJURE, "run", "-t", f"bench-new-{i}", "echo hi"], work, "hi"))
    docker_label = "`docker run --rm --network host conjure/base:bookworm echo hi`"
    rows = [
        Row('`conjure run "echo hi"`, warm idle machine (whole process)', "s", warm, baseline,
            docker_label, goal="≤ 2.5×"),
    ]  # fmt: skip
    if new:
        rows.append(
            Row(
                '`conjure run "echo hi"`, new machine (whole process)',
                "s",
                fresh,
                baseline,
                docker_label,
                goal="≤ 4×",
            )  # fmt: skip
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = [measure_startup(args.runs)]
    with bench_stack(machine_types(args.runs)) as (settings, work):
        rows += measure(settings, work, args.runs)
    print(markdown(rows))


if __name__ == "__main__":
    main()
