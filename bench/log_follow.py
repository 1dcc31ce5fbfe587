"""How long a printed line takes to show in `conjure logs -f`, against `docker run`'s own pipe.

    .venv/bin/python bench/log_follow.py [--lines 40] [--repeats 3]

The program prints its clock every 0.1 s; the reader notes when each line arrives
(same host, same clock). Conjure: `conjure run --background`, then `conjure logs -f N`
read line by line (lines printed before the follower's first second are left out:
they are catch-up, not follow). Baseline: the same program under `docker run`,
its stdout read straight from the pipe. Figure: the 95th percentile of the delay of
one run; min/median/max over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from common import CONJURE, Row, bench_stack, markdown, sh


def program(lines: int, wait: float) -> str:
    return (
        f"python3 -u -c 'import time\ntime.sleep({wait})\n"
        f"for _ in range({lines}):\n    print(time.time(), flush=True)\n    time.sleep(0.1)'"
    )


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 2 else xs[0]


def delays(cmd: list[str], cwd: str | None, skip_before: float) -> list[float]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, bufsize=1)  # fmt: skip
    t_start = time.time()
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.time()
        try:
            printed = float(line.strip())
        except ValueError:
            continue
        if printed >= t_start + skip_before:
            out.append(now - printed)
    proc.wait()
    return out


def measure(settings, work: str, lines: int, repeats: int) -> Row:  # type: ignore[no-untyped-def]
    ours, base = [], []
    sh(CONJURE, "run", "true", cwd=work)  # an idle machine
    for _ in range(repeats):
        base.append(p95(delays(["docker", "run", "--rm", "--network", "host", settings.base_image,
                                "sh", "-c", program(lines, 0)], None, 0)))  # fmt: skip
        run_id = sh(CONJURE, "run", "--background", program(lines, 2.0), cwd=work).strip()
        ours.append(p95(delays([CONJURE, "logs", "-f", run_id], work, 1.0)))
    return Row("a printed line → shown by `conjure logs -f` (p95 of a run)", "s", ours, base,
               "`docker run` stdout pipe", goal="≤ 0.3 s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with bench_stack() as (settings, work):
        row = measure(settings, work, args.lines, args.repeats)
    print(markdown([row]))


if __name__ == "__main__":
    main()
