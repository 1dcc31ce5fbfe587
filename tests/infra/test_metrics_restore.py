"""A resumed run's metrics file on a new machine (`--auto-resume`): rebuilt from the store
as far as the last attempt's pump got, so the new attempt's pump goes on with the next
offset and count, and nothing is counted or stored twice."""

from __future__ import annotations

import json
from pathlib import Path

from conjure.infra.metrics import MetricsPump, read_metrics, restore_metrics_file
from conjure.infra.store import Store


def test_new_machine_goes_on_where_the_last_attempt_stopped(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path / 'store'}")
    old = tmp_path / "old" / "metrics.jsonl"
    old.parent.mkdir()
    lines = [
        json.dumps({"name": "loss", "value": 1.0, "step": 1, "time": 1.7e9}),
        "not a metric",
        "loss 0.5 2",
        json.dumps({"name": "acc", "value": float("nan"), "time": 1.7e9}).replace("NaN", '"nan"'),
        json.dumps({"name": "loss", "value": 0.25, "step": 3, "time": 1.7e9}),
    ]
    old.write_text("\n".join(lines) + "\n")
    MetricsPump(store, 9, old).tick()  # the first attempt's agent, then its machine is gone

    new = tmp_path / "new" / "metrics.jsonl"
    restore_metrics_file(store, 9, new)
    assert new.stat().st_size == old.stat().st_size
    pump = MetricsPump(store, 9, new)
    assert pump.counts == {"loss": 3, "acc": 1}  # counts go on
    with open(new, "a") as f:
        f.write("loss 0.125 4\nacc 0.9\n")
    pump.tick()
    got = read_metrics(store, 9)
    assert [(p.value, p.index, p.step) for p in got["loss"]] == [
        (1.0, 1, 1), (0.5, 2, 2), (0.25, 3, 3), (0.125, 4, 4),
    ]  # fmt: skip
    assert [p.index for p in got["acc"]] == [1, 2] and got["acc"][1].value == 0.9


def test_nothing_stored_gives_an_empty_file(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path / 'store'}")
    path = tmp_path / "m" / "metrics.jsonl"
    restore_metrics_file(store, 3, path)
    assert path.read_bytes() == b""
