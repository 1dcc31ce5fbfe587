"""Run control on a stack of its own, whose pool settings are fixed when the pool
starts: a concurrency limit of 1 keeps runs waiting in Requested, and the pool asks
the provider about its machines every second."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.providers import local
from tests.conftest import conjure, running_stack, stack_env


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    env = stack_env(tmp_path_factory.mktemp("limited-home"), CONJURE_MAX_CONCURRENT_RUNS="1",
                    CONJURE_STOP_GRACE_SECONDS="2", CONJURE_MACHINE_HEALTH_SECONDS="1")  # fmt: skip
    with running_stack(env) as settings:
        yield settings


def state(n: int) -> dict:
    r = conjure("status", str(n), "--json")
    assert r.code == 0, r
    return json.loads(r.out)


def test_requested_runs_are_withdrawn(limited_stack: Settings, tmp_path: Path) -> None:
    first = conjure("run", "--background", "sleep 600", cwd=tmp_path)
    assert first.code == 0, first
    busy = int(first.out)
    waiting = []
    for _ in range(2):
        r = conjure("run", "--background", "echo never", cwd=tmp_path)
        assert r.code == 0, r
        waiting.append(int(r.out))
    deadline = time.monotonic() + 120
    while state(busy)["state"] != "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [state(n)["state"] for n in waiting] == ["Requested", "Requested"]

    s = conjure("stop", "--wait", str(waiting[0]))
    k = conjure("kill", "--wait", str(waiting[1]))
    assert s.code == 0 and k.code == 0, (s, k)
    for n, final in zip(waiting, ["Stopped", "Killed"], strict=False):
        st = state(n)
        assert st["state"] == final and "withdrawn" in st["reason"], st
        assert [c["state"] for c in st["timeline"]] == ["Requested", final]
        assert st["machine_id"] is None
    # the busy run never noticed; stopping it frees the only slot
    assert state(busy)["state"] == "Running"
    assert conjure("stop", "--wait", str(busy)).code == 0
    assert state(busy)["state"] == "Stopped"
    view = json.loads(conjure("machines", "--json").out)
    assert len(view) == 1  # no machine was started for the withdrawn runs


def test_reclaimed_machine_interrupts_the_run_at_once(
    limited_stack: Settings, tmp_path: Path
) -> None:
    """The provider reports the instance reclaimed (a spot instance taken back): the run
    ends Interrupted without waiting for the heartbeat timeout (an hour here)."""
    r = conjure("run", "--background", "for i in $(seq 1 600); do echo $i; sleep 0.5; done",
                cwd=tmp_path, env={"CONJURE_EXECUTE_HEARTBEAT_SECONDS": "3600"})  # fmt: skip
    assert r.code == 0, r
    n = int(r.out)
    deadline = time.monotonic() + 120
    while state(n)["state"] != "Running" and time.monotonic() < deadline:
        time.sleep(0.2)
    machine = state(n)["machine_id"]
    local.reclaim(limited_stack, machine)
    deadline = time.monotonic() + 60
    while (
        state(n)["state"] not in ("Interrupted", "Failed", "Complete")
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    st = state(n)
    assert st["state"] == "Interrupted", st
    assert f"the provider reports machine {machine} reclaimed" in st["reason"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if machine not in [m["id"] for m in json.loads(conjure("machines", "--json").out)]:
            break
        time.sleep(0.3)
    assert machine not in [m["id"] for m in json.loads(conjure("machines", "--json").out)]
    assert not (limited_stack.machines_dir / machine).exists()
