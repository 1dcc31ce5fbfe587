"""Pipelines and the Python API end to end on the real stack (Temporal dev server,
control worker, local machines on Docker, the local store)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conjure import AsyncConjure, Conjure, Step
from conjure.cli.pipelines import check_graph, load_yaml
from conjure.infra.config import Settings
from conjure.infra.errors import NotFoundError, UsageError
from conjure.infra.secrets import REDACTED
from conjure.infra.store import open_store
from conjure.workflows.models import RunState
from conjure.workflows.pipeline_models import PipelineState, StepState
from tests.cli.test_secrets_rerun_code import workflow_history
from tests.conftest import conjure

PIPELINE = """
name: train-model
steps:
  prepare:
    command: mkdir -p data && echo "raw data" > data/input.txt
  train:
    command: >-
      mkdir -p model && (cat /mnt/data/input.txt; echo "trained $EPOCHS epochs") > model/model.txt
      && echo "key=$SECRET_API_KEY"
    mounts: ["{steps.prepare}/data:/mnt/data"]
    env: {EPOCHS: 3, SECRET_API_KEY: pipeline-s3cr3t-key}
  evaluate:
    command: cat /mnt/model/model.txt && echo good > score.txt
    mounts: ["{steps.train}/model:/mnt/model"]
"""


def steps_by_name(st: dict) -> dict[str, dict]:
    return {s["name"]: s for s in st["steps"]}


def test_three_step_pipeline_from_yaml(conjure_stack: Settings, tmp_path: Path) -> None:
    f = tmp_path / "pipeline.yaml"
    f.write_text(PIPELINE)
    r = conjure("pipeline", "run", str(f), "--wait", cwd=tmp_path)
    assert r.code == 0, r
    pid = int(r.out.splitlines()[0])
    assert f"Pipeline {pid} (train-model): Complete" in r.out
    st = conjure("pipeline", "status", str(pid), "--json")
    assert st.code == 0, st
    data = json.loads(st.out)
    assert data["state"] == "Complete"
    steps = steps_by_name(data)
    assert [s["state"] for s in steps.values()] == ["Complete"] * 3
    runs = {name: s["run_id"] for name, s in steps.items()}
    assert len(set(runs.values())) == 3

    # Each step read the previous step's output.
    logs = conjure("logs", str(runs["evaluate"]))
    assert logs.out == "raw data\ntrained 3 epochs\n", logs
    train = json.loads(conjure("status", str(runs["train"]), "--json").out)
    assert train["spec"]["mounts"][0]["source"] == f"runs/{runs['prepare']}/data"
    assert train["spec"]["pipeline_id"] == pid and train["spec"]["pipeline_step"] == "train"
    ls = json.loads(conjure("ls", "--json").out)
    assert {r["id"] for r in ls if r["pipeline"] == pid} == set(runs.values())
    human_ls = conjure("ls").out.splitlines()
    assert [ln for ln in human_ls if f"(pipeline {pid})" in ln][0].split()[0] == str(
        runs["evaluate"]
    )
    assert conjure("ls", f"runs/{runs['evaluate']}").out.strip().endswith("score.txt")
    human = conjure("pipeline", "status", str(pid))
    assert "evaluate" in human.out and str(runs["evaluate"]) in human.out

    # The step's secret: redacted in its log and in both workflows' histories.
    assert conjure("logs", str(runs["train"])).out == f"key={REDACTED}\n"
    for wf in (f"pipeline-{pid}", f"run-{runs['train']}"):
        assert "pipeline-s3cr3t-key" not in workflow_history(conjure_stack, wf)


def test_failed_step_then_resume(conjure_stack: Settings, tmp_path: Path) -> None:
    """train fails (its flag is missing), so evaluate is skipped while the independent
    step finishes; resume reruns only train and evaluate, reusing prepare's output."""
    store = open_store(conjure_stack.store)
    flag = f"uploads/flag-{uuid.uuid4().hex[:8]}"
    store.put_bytes(f"{flag}/placeholder", b"")
    c = Conjure()
    p = c.pipeline(
        [
            Step("prepare", "mkdir -p data && echo raw > data/input.txt"),
            Step("side", "echo side > side.txt"),
            Step(
                "train",
                "test -e /mnt/flag/ok || { echo no flag >&2; exit 3; }; "
                "mkdir -p model && cp /mnt/data/input.txt model/model.txt",
                mounts=["{steps.prepare}/data:/mnt/data", f"{flag}:/mnt/flag"],
            ),
            Step("evaluate", "cat /mnt/model/model.txt", mounts=["{steps.train}/model:/mnt/model"]),
        ],
        name="resume-me",
        cwd=tmp_path,
    )
    first = p.wait()
    assert first.state == PipelineState.FAILED, first
    s1 = {s.name: s for s in first.steps}
    assert [s1[n].state for n in ("prepare", "side", "train", "evaluate")] == [
        StepState.COMPLETE, StepState.COMPLETE, StepState.FAILED, StepState.SKIPPED,
    ]  # fmt: skip
    assert s1["train"].run_state == "Failed" and s1["evaluate"].run_id is None
    # The independent steps ran side by side: each started before the other ended.
    prep, side = (c.get(s1[n].run_id).status() for n in ("prepare", "side"))
    assert prep.created < side.ended and side.created < prep.ended
    assert "no flag" in "".join(line.text for line in p.run("train").logs())

    not_yet = conjure("pipeline", "resume", "999999")
    assert not_yet.code == 1 and "does not exist" in not_yet.err
    store.put_bytes(f"{flag}/ok", b"1")
    r = conjure("pipeline", "resume", str(p.id), cwd=tmp_path)
    assert r.code == 0, r
    assert "reusing prepare, side" in r.err
    q = c.get_pipeline(int(r.out.strip()))
    second = q.wait()
    assert second.state == PipelineState.COMPLETE and second.resumed_from == p.id
    s2 = {s.name: s for s in second.steps}
    assert s2["prepare"].run_id == s1["prepare"].run_id and s2["prepare"].reused
    assert s2["side"].run_id == s1["side"].run_id and s2["side"].reused
    assert s2["train"].run_id != s1["train"].run_id and not s2["train"].reused
    assert s2["evaluate"].state == StepState.COMPLETE
    assert [ln.text for ln in q.run("evaluate").logs()] == ["raw"]
    again = conjure("pipeline", "resume", str(q.id))
    assert again.code == 1 and "nothing to resume" in again.err
    c.close()


def test_stop_pipeline_stops_running_steps(conjure_stack: Settings, tmp_path: Path) -> None:
    c = Conjure()
    p = c.pipeline(
        [
            Step("long", "trap 'exit 0' TERM; sleep 300 & wait"),
            Step("after", "true", depends_on=["long"]),
        ],
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    while True:
        st = p.status()
        long = st.steps[0]
        if long.run_id is not None and c.get(long.run_id).status().state == RunState.RUNNING:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    r = conjure("pipeline", "stop", str(p.id))
    assert r.code == 0, r
    end = p.wait()
    assert end.state == PipelineState.STOPPED
    assert [(s.state, s.run_state) for s in end.steps] == [
        (StepState.STOPPED, "Stopped"), (StepState.STOPPED, ""),
    ]  # fmt: skip
    assert c.get(long.run_id).status().state == RunState.STOPPED
    assert conjure("pipeline", "stop", str(p.id)).code == 1  # already Stopped
    c.close()


async def test_python_api_sync_and_async(conjure_stack: Settings, tmp_path: Path) -> None:
    c = Conjure()
    run = c.run("echo hello; echo out > out.txt", env={"SECRET_X": "api-s3cr3t"}, cwd=tmp_path)
    assert isinstance(run.id, int)
    end = run.wait()
    assert end.state == RunState.COMPLETE and end.spec.env == {"SECRET_X": REDACTED}
    assert [ln.text for ln in run.logs()] == ["hello"]
    assert [e.key for e in run.outputs()] == [f"runs/{run.id}/out.txt"]
    assert run.metrics() == []
    store = open_store(conjure_stack.store)
    store.put_bytes(f"metrics/{run.id}/0001.jsonl",
                    b'{"name": "loss", "value": 0.5, "step": 1, "t": 1.0}\n')  # fmt: skip
    assert run.metrics() == [{"name": "loss", "value": 0.5, "step": 1, "t": 1.0}]
    assert c.get(run.id).status().state == RunState.COMPLETE
    c.close()

    a = AsyncConjure()
    same = await a.get(run.id)
    assert (await same.wait()).run_id == run.id
    assert [ln.text async for ln in same.logs()] == ["hello"]
    with pytest.raises(NotFoundError, match="does not exist"):
        await a.get(999999)


def test_custom_workflow_example(conjure_stack: Settings, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "custom_workflow.py"
    proc = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("Complete") for line in lines), proc.stdout
    run_id = int(lines[0].split()[1])
    assert conjure("logs", str(run_id)).out == "training with lr=0.1\n"


def test_pipeline_definitions_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cycle"):
        check_graph([Step("a", "x", depends_on=["b"]), Step("b", "y", mounts=["{steps.a}:/m"])])
    with pytest.raises(UsageError, match="not a step"):
        check_graph([Step("a", "x", depends_on=["nope"])])
    assert check_graph([Step("a", "x"), Step("b", "y", mounts=["{steps.a}/d:/m"])]) == {
        "a": [], "b": ["a"],
    }  # fmt: skip
    f = tmp_path / "p.yaml"
    f.write_text(PIPELINE)
    name, steps = load_yaml(f)
    assert name == "train-model" and [s.name for s in steps] == ["prepare", "train", "evaluate"]
    assert steps[1].env == {"EPOCHS": "3", "SECRET_API_KEY": "pipeline-s3cr3t-key"}
    f.write_text("steps:\n  a:\n    command: x\n    pip: six==1.17.0\n    apt: [jq]\n")
    assert load_yaml(f)[1][0].pip == ["six==1.17.0"] and load_yaml(f)[1][0].apt == ["jq"]
    f.write_text("steps:\n  a:\n    command: x\n    colour: red\n")
    bad = conjure("pipeline", "run", str(f))
    assert bad.code == 2 and "unknown key(s) colour" in bad.err, bad
    f.write_text("steps: [")
    bad = conjure("pipeline", "run", str(f))
    assert bad.code == 2 and "not valid YAML" in bad.err, bad
