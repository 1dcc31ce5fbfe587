"""Every speed figure of issue 16, each against a baseline measured in the same run.

    .venv/bin/python bench/all.py            # the full table (about 15 minutes on 2 cores)
    .venv/bin/python bench/all.py --quick    # fewer repeats and smaller sizes (a few minutes)
    .venv/bin/python bench/all.py --only run,store --readme   # some rows; rewrite README's table

Prints one Markdown table: the figure (median, min–max over the repeats), its baseline,
and the ratio per pair. Each part starts its own stack in a temporary CONJURE_HOME on
free ports and stops it (every machine included) when done. `--readme` replaces the
table between the `bench:begin`/`bench:end` markers of README.md with this output.

Parts: startup (conjure --help), run (warm and new machine), control (stop, kill),
logs (follow latency), ls (10,000 runs, seeded in about 4 minutes), store (local small files), s3 (large
upload), throughput (60 runs at limit 4), lease (pool lease rate, 1/2/4 shards),
cost (history events and actions per run: a second table, no baseline).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import bench_store
import lease_rate
import log_follow
import ls_scale
import run_control
import run_cost
import run_latency
import throughput
from common import REPO, Row, bench_stack, load_note, markdown

PARTS = ["startup", "run", "control", "logs", "ls", "store", "s3", "throughput", "lease", "cost"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    ap.add_argument("--only", default="", help=f"comma-separated parts of: {', '.join(PARTS)}")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's table")
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or PARTS
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    q = args.quick
    reps = 3 if q else 9

    rows: list[Row] = []
    cost_table = ""
    started = time.time()
    loads = [load_note()]

    def done(new: list[Row]) -> None:
        rows.extend(new)
        loads.append(load_note())
        print(markdown(new), file=sys.stderr, flush=True)

    if "startup" in parts:
        done([run_latency.measure_startup(reps)])
    if {"run", "control", "logs", "ls"} & set(parts):
        with bench_stack(run_latency.machine_types(reps)) as (settings, work):
            if "run" in parts:
                done(run_latency.measure(settings, work, reps))
            if "control" in parts:
                done(run_control.measure(settings, work, 3 if q else 5))
            if "cost" in parts:
                cost_table = run_cost.table(run_cost.measure(settings, work, 3 if q else 5))
                print(cost_table, file=sys.stderr, flush=True)
            if "logs" in parts:
                done([log_follow.measure(settings, work, 20 if q else 40, 3 if q else 5)])
            if "ls" in parts:  # last: it leaves thousands of open workflows behind
                done(ls_scale.measure(settings, work, 10_000, reps))
    if "store" in parts or "s3" in parts:
        with tempfile.TemporaryDirectory(prefix="conjure-bench-") as tmp:
            if "store" in parts:
                done(bench_store.measure_local(Path(tmp), 2000 if q else 10_000, 4096, 3))
            if "s3" in parts:
                done(bench_store.measure_s3(Path(tmp), 4, (32 if q else 256) << 20, 2 if q else 3))
    if "throughput" in parts:
        done([throughput.measure(16 if q else 60, 4, 1 if q else 2)])
    if "lease" in parts:
        done(lease_rate.measure(300 if q else 1000, 64, [1, 2, 4], 1))

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = (
        "python bench/all.py"
        + (" --quick" if q else "")
        + (f" --only {args.only}" if args.only else "")
    )
    table = markdown(rows)
    if cost_table:
        table += (
            '\n\nPer run, in Temporal (`conjure run "echo hi"` on a warm machine):\n\n' + cost_table
        )
    footer = (
        f"\n\n`{cmd}`, {when}, {time.time() - started:.0f} s, {platform.machine()}, "
        f"Python {platform.python_version()}; machine load while it ran: "
        f"{loads[0]} at the start, {loads[-1]} at the end."
    )
    print(table + footer)
    if args.readme:
        readme = REPO / "README.md"
        text = readme.read_text()
        block = re.search(r"<!-- bench:begin -->\n(.*?)<!-- bench:end -->", text, flags=re.S)
        if block is None:
            raise SystemExit("README.md has no <!-- bench:begin --> ... <!-- bench:end --> block")
        body = table + footer if not args.only else merge_block(block.group(1), table, footer)
        readme.write_text(text[: block.start(1)] + body.rstrip("\n") + "\n" + text[block.end(1) :])


def _key(line: str) -> str:
    """A table row's or a note's measure, sizes left out (`--quick` measures 1,000 runs)."""
    cell = line.split(" | ")[0].lstrip("|* ").split(": ")[0]
    return re.sub(r"\d[\d,.]*", "N", cell)


def merge_block(old: str, table: str, footer: str) -> str:
    """`--only`: the README's rows of the parts measured now replaced (in place, new ones
    appended), the other rows and their notes and footer kept."""
    old_lines = old.strip("\n").split("\n")
    first, *rest = table.split("\n\n")  # the table, its notes, the cost table
    new_lines = first.split("\n")
    new_rows = new_lines[2:]
    new_notes = [x for chunk in rest if chunk.startswith("* ") for x in chunk.split("\n")]
    extra = [chunk for chunk in rest if not chunk.startswith("* ")]
    fresh = {_key(x): x for x in new_rows}
    rows, kept = [], 0
    for x in old_lines[2:]:
        if not x.startswith("| "):
            break
        if _key(x) in fresh:
            rows.append(fresh.pop(_key(x)))
        else:
            rows.append(x)
            kept += 1
    rows += list(fresh.values())
    measured = {_key(x) for x in new_rows}
    notes = [x for x in old_lines if x.startswith("* ") and _key(x) not in measured] + new_notes
    out = "\n".join(new_lines[:2] + rows) + ("\n\n" + "\n".join(notes) if notes else "")
    out += "".join("\n\n" + chunk for chunk in extra) + footer
    others = [x for x in old.strip("\n").split("\n\n") if x and x[0] not in "|*"]
    if kept and others:
        out += "\n\nThe other rows: " + "\n\n".join(others)
    return out


if __name__ == "__main__":
    main()
