"""Stop-condition semantics and the metrics protocol, as unit tests (hypothesis
generates the metric series; a plain reference implementation is the oracle)."""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure.cli.commands.runs import sparkline
from conjure.infra.metrics import (
    MetricsPump,
    cpu_percent,
    memory_mb,
    parse_line,
    parse_nvidia_smi,
    read_metrics,
)
from conjure.infra.store import Store
from conjure.workflows.stop_conditions import (
    MetricPoint,
    StopCondition,
    StopConditionState,
    evaluate,
    parse_stop_condition,
)

# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, name, op, value, start",
    [
        ("keras/val_acc < 0.5 : 10", "keras/val_acc", "<", 0.5, 10),
        ("loss>=1e-3", "loss", ">=", 0.001, None),
        ("  hardware/cpu_percent > 90:1 ", "hardware/cpu_percent", ">", 90.0, 1),
        ("x <= -2", "x", "<=", -2.0, None),
    ],
)
def test_parse(text: str, name: str, op: str, value: float, start: int | None) -> None:
    c = parse_stop_condition(text)
    assert (c.name, c.op, c.value, c.start) == (name, op, value, start)


@pytest.mark.parametrize(
    "text", ["", "loss", "loss < ", "loss == 3", "loss ! 3", "< 3", "loss < abc", "loss < 1 : 0",
             "loss < 1 : -2", "loss < 1 : 2.5", "loss < nan", "a b < 1", "loss < 1 :"],
)  # fmt: skip
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stop_condition(text)


# --- evaluation against a reference ------------------------------------------------------

OPS = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
NAMES = ["a", "b"]
values = st.floats(min_value=-10, max_value=10, allow_nan=False) | st.sampled_from(
    [0.0, 1.0, math.nan]
)
conditions = st.builds(
    StopCondition,
    name=st.sampled_from(NAMES),
    op=st.sampled_from(list(OPS)),
    value=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 3.0]),
    start=st.none() | st.integers(min_value=1, max_value=8),
)
series = st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=40)


def numbered(raw: list[tuple[str, float]]) -> list[MetricPoint]:
    counts: dict[str, int] = {}
    out = []
    for name, v in raw:
        counts[name] = counts.get(name, 0) + 1
        out.append(MetricPoint(name=name, value=v, index=counts[name]))
    return out


def reference(conds: list[StopCondition], points: list[MetricPoint]) -> tuple[int, int] | None:
    """(position in the stream, condition number) of the first hit: the spec, literally."""
    for pos, p in enumerate(points):
        for ci, c in enumerate(conds):
            k = c.start if c.start is not None else 1
            if p.name == c.name and p.index >= k and OPS[c.op](p.value, c.value):
                return pos, ci
    return None


def hit_of(conds: list[StopCondition], points: list[MetricPoint], batches: list[int]) -> tuple:
    state = StopConditionState()
    start = 0
    for size in batches + [len(points)]:
        evaluate(conds, state, points[start : start + size])
        start += size
    h = state.hit
    return None if h is None else (h.condition.name, h.index, h.condition)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(conditions, min_size=1, max_size=3), series, st.lists(st.integers(0, 6), max_size=8)
)
def test_first_hit_matches_reference_whatever_the_batching(conds, raw, batches) -> None:
    points = numbered(raw)
    want = reference(conds, points)
    got = hit_of(conds, points, batches)
    if want is None:
        assert got is None
    else:
        pos, ci = want
        assert got == (points[pos].name, points[pos].index, conds[ci])


@settings(max_examples=200, deadline=None)
@given(st.lists(conditions, min_size=1, max_size=3), series, st.integers(0, 40), st.integers(1, 40))
def test_resent_points_count_once(conds, raw, cut, back) -> None:
    """An agent restart re-sends a tail of the stream: the outcome does not change."""
    points = numbered(raw)
    state = StopConditionState()
    evaluate(conds, state, points[:cut])
    evaluate(conds, state, points[max(cut - back, 0) :])
    want = reference(conds, points)
    assert (state.hit is None) == (want is None)
    if want is not None and state.hit is not None:
        assert state.hit.index == points[want[0]].index


def test_spec_example() -> None:
    """`keras/val_acc < 0.5 : 10`: stop if not at 50% within 10 epochs, or if it dips later."""
    c = [parse_stop_condition("keras/val_acc < 0.5 : 10")]
    rising = [0.1 * i for i in range(1, 12)]  # 0.5 reached at epoch 5: never stops
    assert hit_of(c, numbered([("keras/val_acc", v) for v in rising]), []) is None
    slow = [0.04 * i for i in range(1, 15)]  # 0.4 at epoch 10: stops there
    name, index, _ = hit_of(c, numbered([("keras/val_acc", v) for v in slow]), [])
    assert (name, index) == ("keras/val_acc", 10)
    dip = [0.6] * 12 + [0.45]  # fine until it dips at epoch 13
    assert hit_of(c, numbered([("keras/val_acc", v) for v in dip]), [])[1] == 13


# --- the metrics protocol and the pump --------------------------------------------------------


def test_parse_line_forms() -> None:
    assert parse_line('{"name": "loss", "value": 0.5, "step": 3}')[:3] == ("loss", 0.5, 3)
    assert parse_line("loss 0.25 7")[:3] == ("loss", 0.25, 7)
    assert parse_line("acc 1")[:3] == ("acc", 1.0, None)
    assert math.isnan(parse_line('{"name": "l", "value": "nan"}')[1])
    for bad in ['{"name": "x"}', "just-a-name", "a b c d", '{"name": "a b", "value": 1}',
                '{"name": "x", "value": true}', "x notanumber", "[1, 2]"]:  # fmt: skip
        with pytest.raises(ValueError):
            parse_line(bad)


def test_pump_resumes_from_the_store(tmp_path: Path) -> None:
    """A second pump (a restarted agent) goes on where the first stopped: nothing twice,
    nothing lost, indices continue; half-written lines wait for their newline."""
    store = Store(f"file://{tmp_path / 'store'}")
    path = tmp_path / "metrics.jsonl"
    sent: list[MetricPoint] = []

    def forward(points) -> bool:  # type: ignore[no-untyped-def]
        sent.extend(MetricPoint(name=p.name, value=p.value, index=p.index) for p in points)
        return True

    path.write_text("loss 1\nloss 0.5\nacc 0.1\nbad line here x\nloss 0.2")  # last line partial
    first = MetricsPump(store, 7, path, forward=forward, watch={"loss"})
    first.tick()
    with open(path, "a") as f:
        f.write("5\nacc 0.3\n")
    second = MetricsPump(store, 7, path, forward=forward, watch={"loss"})
    assert second.offset == first.offset and second.counts == {"loss": 2, "acc": 1}
    second.tick()
    got = read_metrics(store, 7)
    assert [(p.value, p.index) for p in got["loss"]] == [(1.0, 1), (0.5, 2), (0.25, 3)]
    assert [(p.value, p.index) for p in got["acc"]] == [(0.1, 1), (0.3, 2)]
    assert [(p.value, p.index) for p in sent] == [(1.0, 1), (0.5, 2), (0.25, 3)]
    assert second.bad_lines == 0 and first.bad_lines == 1


def test_hardware_helpers() -> None:
    prev = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 1_000},
            "system_cpu_usage": 10_000,
            "online_cpus": 2,
        }
    }
    cur = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000},
            "system_cpu_usage": 14_000,
            "online_cpus": 2,
        }
    }
    assert cpu_percent(prev, cur) == 100.0  # one of two CPUs busy
    assert cpu_percent(None, cur) is None
    assert (
        memory_mb({"memory_stats": {"usage": 3 * 2**20, "stats": {"total_inactive_file": 2**20}}})
        == 2.0
    )
    # What nvidia-smi prints on a two-GPU machine (not exercised here: no GPU).
    assert parse_nvidia_smi("50, 1000\n70, 3000\n") == (60.0, 4000.0)
    assert parse_nvidia_smi("") is None


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert len(sparkline(list(range(1000)), width=40)) == 40
    assert sparkline([math.nan]) == ""


def test_helper_module_writes_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conjure.activities import conjure_metrics

    target = tmp_path / "m.jsonl"
    monkeypatch.setenv("CONJURE_METRICS_FILE", str(target))
    conjure_metrics.send_metric("loss", 0.5, step=2)
    cb = conjure_metrics.KerasCallback()
    cb.on_epoch_end(0, {"val_acc": 0.25, "loss": 1.5})
    cb.on_train_begin()  # the rest of Keras's callback interface exists
    lines = [parse_line(x)[:3] for x in target.read_text().splitlines()]
    assert lines == [("loss", 0.5, 2), ("keras/val_acc", 0.25, 1), ("keras/loss", 1.5, 1)]
    assert all("time" in json.loads(x) for x in target.read_text().splitlines())
