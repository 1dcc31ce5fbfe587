"""Hyperparameter search end to end on the real stack (Temporal dev server, control
worker, local machines on Docker, the local store): a grid through the `conjure`
command ranks real runs by the metric they log; bad flags start nothing; a random
search from the Python API is stopped."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conjure import Conjure
from conjure.cli.console.app import create_app
from conjure.infra.config import Settings
from conjure.workflows.hyper_models import HyperState
from tests.conftest import conjure

TRAIN = """\
import sys, time
from conjure_metrics import send_metric
rate, layers, seconds = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
for epoch in range(1, 4):
    send_metric("val_acc", rate * layers * epoch / 3, step=epoch)
time.sleep(seconds)
print(f"trained rate={rate} layers={layers}")
"""


def project(root: Path) -> Path:
    """A git repository holding the training script (runs get the committed tree)."""
    (root / "train.py").write_text(TRAIN)
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-q", "-m", "train"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True
        )
    return root


def run_count() -> int:
    return len(json.loads(conjure("ls", "--json", "-n", "1000").out))


def test_grid_ranks_runs_by_their_metric(conjure_stack: Settings, tmp_path: Path) -> None:
    project(tmp_path)
    before = run_count()
    for bad, says in [
        (["-p", "rate=0.1,0.3", "python3 train.py :rate: :layers: 0"], "names :layers:"),
        (["-p", "rate=0.1", "-p", "depth=1,2", "python3 train.py :rate: 1 0"], "depth is not used"),
        (["-p", "rate=0.3:0.1", "python3 train.py :rate: 1 0"], "MIN must be below MAX"),
        (["-p", "rate=0.1", "--metric-agg", "median", "python3 train.py :rate: 1 0"], "median"),
        (["-p", "rate=0.1", "-t", "no-such-type", "python3 train.py :rate: 1 0"], "no-such-type"),
    ]:
        r = conjure("hyper", "grid", *bad, cwd=tmp_path)
        assert r.code == 2 and says in r.err and "Traceback" not in r.err, r
        assert len(r.err.strip().splitlines()) == 1, r
    r = conjure("hyper", "random", "-p", "rate=0.1:1", "python3 train.py :rate: 1 0", cwd=tmp_path)
    assert r.code == 2 and "--num-runs" in r.err, r
    assert run_count() == before  # nothing was started

    r = conjure(
        "hyper", "grid", "-p", "rate=0.1,0.3", "-p", "layers=1,2", "--metric", "val_acc",
        "--metric-agg", "max", "--parallel", "2", "python3 train.py :rate: :layers: 0",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert "Complete, 4/4 runs ended" in lines[0] and "val_acc = 0.6" in lines[0], r
    header = lines.index(next(ln for ln in lines if ln.startswith("RUN")))
    rows = [ln.split() for ln in lines[header + 1 :]]
    assert [(row[2], row[3], row[4]) for row in rows] == [
        ("0.3", "2", "0.6"), ("0.3", "1", "0.3"), ("0.1", "2", "0.2"), ("0.1", "1", "0.1"),
    ], r.out  # fmt: skip
    assert all(row[1] == "Complete" for row in rows)
    hid = int(r.err.split("Hyperparameter search #")[1].split(":")[0])

    st = json.loads(conjure("hyper", "status", str(hid), "--json").out)
    assert st["state"] == "Complete" and st["planned"] == 4
    best = st["ranked"][0]
    assert best["params"] == {"rate": "0.3", "layers": "2"} and best["value"] == 0.6
    assert best["points"] == 3
    # Each run is an ordinary run: its command substituted, its log, its search.
    run = json.loads(conjure("status", str(best["run_id"]), "--json").out)
    assert run["spec"]["command"] == "python3 train.py 0.3 2 0" and run["spec"]["hyper_id"] == hid
    assert conjure("logs", str(best["run_id"])).out == "trained rate=0.3 layers=2\n"
    assert f"hyper search: {hid}" in conjure("status", str(best["run_id"])).out
    assert run_count() == before + 4
    # The search's history holds one summary per run, not the metric stream.
    stop = conjure("hyper", "stop", str(hid))
    assert stop.code == 1 and "already Complete" in stop.err, stop
    missing = conjure("hyper", "status", "999999")
    assert missing.code == 1 and "does not exist" in missing.err, missing
    # `conjure hyper ls`: the search among the others, newest first, with its best run.
    listed = json.loads(conjure("hyper", "ls", "--json").out)
    assert [x["id"] for x in listed] == sorted((x["id"] for x in listed), reverse=True)
    mine = next(x for x in listed if x["id"] == hid)
    assert (mine["kind"], mine["state"], mine["runs_ended"], mine["planned"]) == (
        "grid", "Complete", 4, 4)  # fmt: skip
    assert mine["best_run"] == best["run_id"] and mine["best_value"] == 0.6
    table = conjure("hyper", "ls").out.splitlines()
    assert table[0].split()[:5] == ["ID", "KIND", "STATE", "RUNS", "METRIC"], table
    row = next(ln for ln in table if ln.split()[0] == str(hid))
    assert f"0.6 (run {best['run_id']})" in row and "val_acc (max)" in row, row

    # The web console's JSON API and page (the same Python API underneath).
    console = TestClient(create_app(conjure_stack), base_url="http://127.0.0.1:8234")
    d = console.get(f"/api/hypers/{hid}").json()
    assert d["status"]["state"] == "Complete" and d["status"]["planned"] == 4
    assert [r["value"] for r in d["ranked"]] == pytest.approx([0.6, 0.3, 0.2, 0.1])
    assert d["ranked"][0]["run_id"] == best["run_id"]
    assert console.get(f"/hypers/{hid}").status_code == 200
    assert console.get("/api/hypers/999999").status_code == 404
    again = console.post(f"/api/hypers/{hid}/stop")
    assert again.status_code == 409 and "already Complete" in again.json()["error"]


def test_random_search_from_python_is_stopped(conjure_stack: Settings, tmp_path: Path) -> None:
    project(tmp_path)
    c = Conjure()
    try:
        h = c.hyper_random(
            "python3 train.py :rate: :layers: 600",
            params={"rate": "0.01:1:log", "layers": [1, 2, 3]},
            num_runs=3,
            parallel=1,
            metric="val_acc",
            code_dir=tmp_path,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = h.status()
            if st.runs[0].state == "Running" and st.runs[0].points == 3:
                break
            time.sleep(0.5)
        assert st.runs[0].state == "Running" and st.runs[0].value is not None, st
        assert [r.state for r in st.runs[1:]] == ["Pending", "Pending"]  # parallel=1
        h.stop()
        final = h.wait()
        assert final.state == HyperState.STOPPED
        assert [r.state for r in final.runs] == ["Stopped", "Not started", "Not started"]
        assert final.runs[0].value is not None and final.best is not None
        rate = float(final.runs[0].params["rate"])
        assert 0.01 <= rate <= 1
        listed = {st.hyper_id: st for st in c.list_hypers()}
        assert listed[h.id].state == HyperState.STOPPED and listed[h.id].kind == "random"
    finally:
        c.close()
