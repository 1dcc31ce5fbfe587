"""Hardware metrics: sampled at least every 2 s during a run's first minute, then at the
configured interval (a clock the test moves; the pump and local store are real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure.infra import metrics
from conjure.infra.metrics import MetricsPump, read_metrics
from conjure.infra.store import open_store


def test_hardware_sampled_every_2s_in_the_first_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    store = open_store(f"file://{tmp_path / 'store'}")
    pump = MetricsPump(
        store=store,
        run_id=3,
        path=tmp_path / "metrics.jsonl",
        sample=lambda: {"cpu_percent": 50.0},
        sample_every=10.0,
    )
    taken = []
    for second in range(0, 121):  # one tick a second for two minutes
        clock[0] = 1000.0 + second
        before = pump.samples
        pump.tick()
        if pump.samples > before:
            taken.append(second)
    early = [t for t in taken if t < 60]
    assert early[:3] == [0, 2, 4] and len(early) == 30  # every 2 s in the first minute
    late = [t for t in taken if t >= 60]
    assert all(b - a == 10 for a, b in zip(late, late[1:], strict=False)), (
        late
    )  # then the setting's 10 s
    assert len(read_metrics(store, 3)["cpu_percent"]) == len(taken)
