"""Shared by the benchmarks: a row of figures against a baseline measured in the same run,
the Markdown table bench/all.py prints, and a throw-away stack.

Every row holds the raw samples of Conjure and of its baseline (taken in pairs where
the two can alternate) and the per-pair ratios, so min/median/max are shown for all
three. A ratio says how Conjure compares with the baseline in the direction the goal
is written: `x baseline` for times (lower is better), `of baseline` for speeds
(higher is better).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.conftest import (  # noqa: E402, F401
    RunningPrograms,
    free_port,
    running_stack,
    stack_env,
    submit_from_two,
    wait_for_starts,
)

CONJURE = str(Path(sys.executable).parent / "conjure")
TEMPORAL = str(Path(sys.executable).parent / "temporal")


@dataclass
class Row:
    measure: str
    unit: str  # "s", "MiB/s", "leases/s", ...
    ours: list[float]
    base: list[float]
    base_label: str
    higher_is_better: bool = False  # a speed (MiB/s, leases/s) rather than a time
    goal: str = ""
    note: str = ""
    ratios: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ratios and self.ours and self.base:
            if len(self.ours) == len(self.base):  # paired: one ratio per pair
                pairs = list(zip(self.ours, self.base, strict=True))
            else:
                pairs = [(o, statistics.median(self.base)) for o in self.ours]
            self.ratios = [(o / b if b else float("inf")) for o, b in pairs]

    @property
    def ratio_word(self) -> str:
        return "of baseline" if self.higher_is_better else "x baseline"


def spread(xs: list[float], unit: str) -> str:
    if not xs:
        return "-"
    digits = 3 if unit == "s" else 1 if max(xs) >= 10 else 2
    lo, med, hi = min(xs), statistics.median(xs), max(xs)
    u = f" {unit}" if unit else ""
    if len(xs) == 1:
        return f"{med:.{digits}f}{u}"
    return f"{med:.{digits}f}{u} ({lo:.{digits}f}–{hi:.{digits}f})"


def markdown(rows: list[Row]) -> str:
    out = [
        "| measure | Conjure, median (min–max) | baseline | baseline, median (min–max) "
        "| ratio, median (min–max) | goal |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = spread(r.ratios, "")
        out.append(
            f"| {r.measure} | {spread(r.ours, r.unit)} | {r.base_label} | {spread(r.base, r.unit)} "
            f"| **{ratio}** {r.ratio_word} | {r.goal} |"
        )
    notes = [f"{r.measure}: {r.note}" for r in rows if r.note]
    if notes:
        out.append("")
        out += [f"* {n}" for n in notes]
    return "\n".join(out)


def timed(cmd: list[str], cwd: str | None = None, expect: str | None = None) -> float:
    """Wall time of one whole process; its failure ends the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or (expect is not None and expect not in proc.stdout):
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return elapsed


def sh(*cmd: str, cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


@contextmanager
def bench_stack(config_toml: str = "", **extra_env: str) -> Iterator[tuple[object, str]]:
    """A stack in its own CONJURE_HOME on free ports (tests/conftest.py's running_stack),
    stopped with every machine it made; yields (settings, an empty working directory)."""
    home = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    if config_toml:
        (home / "config.toml").write_text(config_toml)
    work = tempfile.mkdtemp(prefix="conjure-bench-cwd-")
    env = stack_env(home, CONJURE_IDLE_TIMEOUT_SECONDS="600", **extra_env)
    try:
        with running_stack(env) as settings:
            yield settings, work
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def load_note() -> str:
    """What else this machine was doing: the load average and the busiest processes."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


async def start_seeded(client, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """client.start_workflow(**kwargs) of a seeded workflow (one no worker runs),
    retried: a dev server this busy now and then times out or says its namespace is
    not found, and the same start again is a no-op if the first landed (the id
    conflict policy USE_EXISTING)."""
    import asyncio

    from temporalio.common import WorkflowIDConflictPolicy
    from temporalio.service import RPCError

    for attempt in range(30):
        try:
            await client.start_workflow(
                "RunWorkflow", **kwargs, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING
            )
            return
        except RPCError:
            if attempt == 29:
                raise
            await asyncio.sleep(0.5)
