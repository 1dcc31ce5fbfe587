"""Build time of an environment, fresh and cached, through the real `conjure` command.

Starts its own embedded stack in a temporary CONJURE_HOME on free ports, removes the
environment images (`conjure images prune`), then runs `conjure run --pip six==1.16.0 --apt jq "true"` twice.
Prints the Building-state time of each run (from the run's timeline) and the ratio of
each to a raw `docker run --rm <base> true` measured in the same run.

    python bench/env_cache.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from common import free_port

CONJURE = str(Path(sys.executable).parent / "conjure")
FLAGS = ["--pip", "six==1.16.0", "--apt", "jq"]


def conjure(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONJURE, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def building_seconds(run_id: int, cwd: str) -> float:
    st = json.loads(conjure("status", str(run_id), "--json", cwd=cwd).stdout)
    times = {c["state"]: datetime.fromisoformat(c["at"]) for c in st["timeline"]}
    return (times["Mounting"] - times["Building"]).total_seconds()


def one_run(cwd: str) -> tuple[float, float, str]:
    t0 = time.monotonic()
    r = conjure("run", *FLAGS, "true", cwd=cwd)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"run failed:\n{r.stderr}")
    run_id = int(r.stderr.split("Casting run #", 1)[1].split("…")[0])
    how = "cached" if "(environment cached)" in r.stderr else "built"
    return building_seconds(run_id, cwd), wall, how


def main() -> None:
    home = tempfile.mkdtemp(prefix="conjure-bench-")
    os.environ.update(
        CONJURE_HOME=home,
        CONJURE_EMBEDDED_PORT=str(free_port()),
        CONJURE_EMBEDDED_UI_PORT=str(free_port()),
    )
    from conjure import AsyncConjure
    from conjure.infra import stack
    from conjure.infra.config import get_settings
    from conjure.infra.providers import local

    settings = get_settings()
    asyncio.run(stack.up(settings))
    try:
        tag = AsyncConjure(settings).environment(pip=FLAGS[1:2], apt=FLAGS[3:4]).tag
        conjure("images", "prune", cwd=home)  # all: no shared layer left to reuse
        t0 = time.monotonic()
        subprocess.run(["docker", "run", "--rm", "--network", "host", settings.base_image, "true"],
                       check=True, capture_output=True)  # fmt: skip
        baseline = time.monotonic() - t0
        fresh_build, fresh_wall, how1 = one_run(home)
        cached_build, cached_wall, how2 = one_run(home)
        print(f"command: conjure run {' '.join(FLAGS)} true   (image {tag})")
        print(f"baseline docker run --rm {settings.base_image} true: {baseline:.2f}s")
        print(f"fresh  ({how1}):  Building {fresh_build:6.2f}s  whole command {fresh_wall:6.2f}s"
              f"  Building/baseline {fresh_build / baseline:6.1f}x")  # fmt: skip
        print(f"cached ({how2}): Building {cached_build:6.2f}s  whole command {cached_wall:6.2f}s"
              f"  Building/baseline {cached_build / baseline:6.1f}x")  # fmt: skip
        print(f"fresh/cached Building: {fresh_build / max(cached_build, 1e-3):.0f}x")
    finally:
        for rec in local.list_instances(settings):
            local.terminate(settings, rec.machine_id)
        stack.down(settings)


if __name__ == "__main__":
    main()
