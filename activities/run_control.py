"""Helpers of the machine-local activities for run control: stop/kill markers,
build-log tails, hardware sampling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conjure.infra.metrics import CPU, GPU, GPU_MEMORY, MEMORY, cpu_percent, gpu_sample, memory_mb

# Written in the run's folder by `signal_container`: "stop <grace>" or "kill". The
# execute activity applies it if the container did not exist yet when it arrived.
HALT_FILE = "halt"
LOG_TAIL_LINES = 30


def read_halt(run_dir: Path) -> tuple[str, float] | None:
    try:
        text = (run_dir / HALT_FILE).read_text().split()
    except FileNotFoundError:
        return None
    if not text:
        return None
    kind = "kill" if "kill" in text else "stop"
    grace = float(text[1]) if kind == "stop" and len(text) > 1 else 30.0
    return kind, grace


def write_halt(run_dir: Path, kind: str, grace: float) -> None:
    if not run_dir.exists():
        return  # not on this machine, or already cleaned up: nothing to stop
    path = run_dir / HALT_FILE
    if kind == "kill":
        path.write_text("kill\n")
    elif read_halt(run_dir) is None:
        path.write_text(f"stop {grace:g}\n")


def log_tail_details(lines: list[str]) -> dict[str, Any]:
    return {"log_tail": lines[-LOG_TAIL_LINES:]}


def container_sampler(docker_api: Any, container_id: str) -> Callable[[], dict[str, float]]:
    """A hardware sampler: CPU % and memory MB of the container; GPU where nvidia-smi is."""
    prev: dict[str, Any] = {}

    def sample() -> dict[str, float]:
        nonlocal prev
        stats = docker_api.stats(container_id, stream=False, one_shot=True)
        out: dict[str, float] = {}
        cpu = cpu_percent(prev, stats)
        prev = stats
        if cpu is not None:
            out[CPU] = cpu
        mem = memory_mb(stats)
        if mem is not None:
            out[MEMORY] = mem
        gpu = gpu_sample()
        if gpu is not None:
            out[GPU], out[GPU_MEMORY] = gpu
        return out if cpu is not None else {}  # the first call only primes the CPU counter

    return sample
