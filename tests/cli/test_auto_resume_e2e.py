"""`--auto-resume` end to end on a stack of its own (Temporal dev server, control
worker, local machines on Docker, the local store), whose pool asks the provider about
its machines every second and whose agents sync the working directory every second:
a training loop that resumes from its checkpoint has its machine reclaimed (the local
provider's `reclaim`, what a cloud does to a spot instance) in the middle, goes on as a
second attempt on a new machine, and ends with the model of an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.metrics import read_metrics
from conjure.infra.providers import local
from conjure.infra.store import open_store
from tests.conftest import conjure, running_stack, stack_env

TRAIN = """\
import json, os, sys, time
from conjure_metrics import send_metric
epochs, pause = int(sys.argv[1]), float(sys.argv[2])
state = {"epoch": 0, "w": 1.0}
if os.path.exists("ckpt.json"):
    with open("ckpt.json") as f:
        state = json.load(f)
    print(f"resumed at epoch {state['epoch']}", flush=True)
while state["epoch"] < epochs:
    state["epoch"] += 1
    state["w"] = round(state["w"] * 1.5 + state["epoch"], 6)
    send_metric("w", state["w"], step=state["epoch"])
    with open("ckpt.tmp", "w") as f:
        json.dump(state, f)
    os.replace("ckpt.tmp", "ckpt.json")  # a checkpoint is whole or absent
    print(f"epoch {state['epoch']}", flush=True)
    time.sleep(pause)
with open("model.json", "w") as f:
    json.dump(state, f)
"""


@pytest.fixture(scope="module")
def resume_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # spot = true: the local provider launches the catalog's spot types (`cpu`) as spot
    # machines, as a cloud would, and `reclaim` is what a cloud does to them.
    env = stack_env(tmp_path_factory.mktemp("resume-home"), CONJURE_MACHINE_HEALTH_SECONDS="1",
                    CONJURE_CHECKPOINT_SYNC_SECONDS="1", CONJURE_SPOT="true")  # fmt: skip
    with running_stack(env) as settings:
        yield settings


def status(n: int) -> dict:
    r = conjure("status", str(n), "--json")
    assert r.code == 0, r
    return json.loads(r.out)


def wait_for(what, timeout: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.3)
    return what()


def test_reclaimed_run_resumes_from_its_checkpoint(resume_stack: Settings, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "train"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True)  # fmt: skip
    store = open_store(resume_stack.store)

    bad = conjure("run", "--spot-fallback", "1", "python3 train.py 40 0", cwd=tmp_path)
    assert bad.code == 2 and "--spot-fallback needs --auto-resume" in bad.err, bad

    plain = conjure("run", "--background", "python3 train.py 40 0", cwd=tmp_path)
    resumed = conjure("run", "--background", "--auto-resume=3", "python3 train.py 40 1",
                      cwd=tmp_path)  # fmt: skip
    assert plain.code == 0 and resumed.code == 0, (plain, resumed)
    p, n = int(plain.out), int(resumed.out)

    def checkpoint_epoch() -> int:
        try:
            return json.loads(store.read_bytes(f"runs/{n}/ckpt.json"))["epoch"]
        except Exception:
            return 0

    # Synced while running: the checkpoint reaches the store before the run ends.
    assert wait_for(lambda: checkpoint_epoch() >= 3), status(n)
    first = status(n)
    assert first["state"] == "Running", first
    machine = first["machine_id"]
    local.reclaim(resume_stack, machine)

    assert wait_for(lambda: status(n)["state"] in ("Complete", "Failed", "Interrupted")), status(n)
    st = status(n)
    assert st["state"] == "Complete", st
    attempts = st["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2], attempts
    assert attempts[0]["machine_id"] == machine and attempts[0]["state"] == "Interrupted"
    assert "reclaimed" in attempts[0]["reason"]
    assert attempts[1]["machine_id"] != machine and attempts[1]["state"] == "Complete"
    assert st["cost"] == pytest.approx(sum(a["cost"] for a in attempts))
    states = [c["state"] for c in st["timeline"]]
    assert states.count("Requested") == 2 and states.count("Running") == 2, states

    # The second attempt went on from the checkpoint, and ended where an uninterrupted
    # run of the same loop ends.
    log = conjure("logs", str(n)).out
    resumed_at = int(log.split("resumed at epoch ")[1].split()[0])
    assert resumed_at >= 3, log
    assert "epoch 1\n" not in log.split("resumed at epoch")[1]
    assert wait_for(lambda: status(p)["state"] == "Complete"), status(p)
    model = json.loads(store.read_bytes(f"runs/{n}/model.json"))
    assert model == json.loads(store.read_bytes(f"runs/{p}/model.json"))
    assert model["epoch"] == 40
    # Its metric goes on across the attempts: the last value is the model's.
    w = read_metrics(store, n)["w"]
    assert w[-1].value == model["w"] and w[-1].step == 40
    assert [pt.index for pt in w] == list(range(1, len(w) + 1))

    human = conjure("status", str(n)).out
    assert "auto-resume:  up to 3 attempts" in human
    assert f"attempt 1:    {machine}" in human and "attempt 2:" in human


def test_attempts_run_out(resume_stack: Settings, tmp_path: Path) -> None:
    """Reclaimed on each of its 2 attempts: the run ends Interrupted, saying so."""
    r = conjure("run", "--background", "--auto-resume", "2", "sleep 600", cwd=tmp_path)
    assert r.code == 0, r
    n = int(r.out)
    machines = []
    for attempt in (1, 2):

        def running(done: int = attempt - 1) -> bool:
            st = status(n)
            return st["state"] == "Running" and len(st["attempts"]) == done

        assert wait_for(running), status(n)
        machines.append(status(n)["machine_id"])
        local.reclaim(resume_stack, machines[-1])
    assert wait_for(lambda: status(n)["state"] == "Interrupted"), status(n)
    st = status(n)
    assert "attempt 2 of 2: no more attempts" in st["reason"], st
    assert [a["machine_id"] for a in st["attempts"]] == machines and machines[0] != machines[1]
    assert [a["state"] for a in st["attempts"]] == ["Interrupted", "Interrupted"]


def test_spot_fallback_after_k_reclaims(resume_stack: Settings, tmp_path: Path) -> None:
    """`--spot-fallback 2`: reclaimed twice on spot machines, the third attempt asks for
    the type on demand, and gets a new on-demand machine even though an idle spot machine
    of the same type is there to take."""
    r = conjure("run", "--background", "--auto-resume=3", "--spot-fallback", "2",
                "sleep 600", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r
    n = int(r.out)
    machines = []
    for attempt in (1, 2, 3):

        def running(done: int = attempt - 1) -> bool:
            st = status(n)
            return st["state"] == "Running" and len(st["attempts"]) == done

        assert wait_for(running), status(n)
        machines.append(status(n)["machine_id"])
        if attempt == 2:  # an idle spot machine of the type, for the third attempt to refuse
            quick = conjure("run", "true", cwd=tmp_path)
            assert quick.code == 0, quick
        if attempt < 3:
            local.reclaim(resume_stack, machines[-1])
    third = local.describe(resume_stack, machines[2])
    assert third is not None and not third.spot, third  # launched on demand
    idle_spot = [
        rec.machine_id
        for rec in local.list_instances(resume_stack)
        if rec.state == "running" and rec.spot and rec.machine_id not in machines
    ]
    assert idle_spot, "the quick run left no idle spot machine"
    st = status(n)
    assert [a["spot"] for a in st["attempts"]] == [True, True], st["attempts"]
    assert len(set(machines)) == 3, machines
    assert conjure("kill", str(n)).code == 0
    assert wait_for(lambda: status(n)["state"] == "Killed"), status(n)
    st = status(n)
    assert [a["spot"] for a in st["attempts"]] == [True, True, False], st["attempts"]
    assert [a["state"] for a in st["attempts"]] == ["Interrupted", "Interrupted", "Killed"]
    human = conjure("status", str(n)).out
    assert "on demand after 2 interruption(s)" in human, human
