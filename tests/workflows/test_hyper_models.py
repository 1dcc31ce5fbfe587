"""Hyperparameter search: parsing `--param`, `:name:` substitution, the grid, seeded
random sampling, aggregation and ranking (pure functions, no stack)."""

from __future__ import annotations

import math
import random

import pytest

from conjure.workflows.hyper_models import (
    HyperRun,
    aggregate,
    check_search,
    default_goal,
    grid,
    parse_param,
    placeholders,
    rank,
    sample,
    sample_all,
    substitute,
)


def test_parse_values_and_ranges() -> None:
    p = parse_param("rate=0.001,0.01,0.1")
    assert p.name == "rate" and p.values == ["0.001", "0.01", "0.1"] and not p.is_range
    r = parse_param("rate=0.0001:0.1:log")
    assert r.is_range and (r.low, r.high, r.scale, r.type) == (0.0001, 0.1, "log", "float")
    i = parse_param("layers=2:8::int")
    assert (i.low, i.high, i.scale, i.type) == (2, 8, "linear", "int")
    assert parse_param(" opt = sgd , adam ").values == ["sgd", "adam"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rate", "is not NAME=VALUES"),
        ("=1,2", "is not a parameter name"),
        ("9x=1", "is not a parameter name"),
        ("rate=", "no values"),
        ("rate=1,,2", "empty value"),
        ("rate=1,1", "given twice"),
        ("rate=a:b", "must be numbers"),
        ("rate=1:0.5", "MIN must be below MAX"),
        ("rate=0:1:log", "needs MIN above 0"),
        ("mom=0.5:1:reverse_log", "needs MAX below 1"),
        ("rate=0.1:1:cubic", "scale 'cubic'"),
        ("rate=0.1:1:log:double", "type 'double'"),
        ("n=1.5:3::int", "whole MIN and MAX"),
        ("rate=1:2:log:float:x", "not MIN:MAX"),
    ],
)
def test_parse_rejects(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_param(text)


def test_placeholders_and_substitution() -> None:
    cmd = "python train.py --rate :rate: --layers :layers: --again :rate: http://h:80/x"
    assert placeholders(cmd) == ["rate", "layers"]
    assert substitute(cmd, {"rate": "0.1", "layers": "3"}) == (
        "python train.py --rate 0.1 --layers 3 --again 0.1 http://h:80/x"
    )


def test_check_search() -> None:
    rate, layers = parse_param("rate=0.1,0.2,0.3"), parse_param("layers=2,3")
    cmd = "train --rate :rate: --layers :layers:"
    assert check_search("grid", cmd, [rate, layers], 0) == 6
    assert check_search("random", cmd, [rate, layers], 20) == 20
    with pytest.raises(ValueError, match="names :depth:, which no --param defines"):
        check_search("grid", cmd + " :depth:", [rate, layers], 0)
    with pytest.raises(ValueError, match="--param layers is not used"):
        check_search("grid", "train --rate :rate:", [rate, layers], 0)
    with pytest.raises(ValueError, match="given twice"):
        check_search("grid", "train :rate:", [rate, rate], 0)
    with pytest.raises(ValueError, match="a grid takes a list of values"):
        check_search("grid", "train :lr:", [parse_param("lr=0.1:1")], 0)
    with pytest.raises(ValueError, match="--num-runs of at least 1"):
        check_search("random", cmd, [rate, layers], 0)
    with pytest.raises(ValueError, match="at least one --param"):
        check_search("grid", "train", [], 0)
    many = [parse_param(f"p{i}=" + ",".join(str(v) for v in range(10))) for i in range(3)]
    with pytest.raises(ValueError, match="1000 runs; at most 500"):
        check_search("grid", " ".join(f":p{i}:" for i in range(3)), many, 0)


def test_grid_is_every_combination_last_fastest() -> None:
    combos = grid([parse_param("rate=0.1,0.2"), parse_param("layers=2,3,4")])
    assert combos == [{"rate": r, "layers": n} for r in ("0.1", "0.2") for n in ("2", "3", "4")]


def test_random_sampling_is_seeded_and_in_range() -> None:
    params = [
        parse_param("rate=0.0001:0.1:log"),
        parse_param("mom=0.9:0.999:reverse_log"),
        parse_param("layers=2:8::int"),
        parse_param("opt=sgd,adam"),
    ]
    a = [sample_all(params, random.Random(7)) for _ in range(3)]
    b = [sample_all(params, random.Random(7)) for _ in range(3)]
    assert a == b  # the same seed, the same draws (as on a workflow's replay)
    rng = random.Random(1)
    draws = [sample_all(params, rng) for _ in range(2000)]
    rates = [float(d["rate"]) for d in draws]
    assert all(0.0001 <= r <= 0.1 for r in rates)
    # log scale: about a third of the draws in each decade
    third = sum(1 for r in rates if r < 0.001) / len(rates)
    assert 0.25 < third < 0.42
    moms = [float(d["mom"]) for d in draws]
    assert all(0.9 <= m <= 0.999 for m in moms)
    assert sum(1 for m in moms if m > 0.99) > sum(1 for m in moms if m < 0.91)  # dense near MAX
    assert {d["layers"] for d in draws} == {str(n) for n in range(2, 9)}
    assert {d["opt"] for d in draws} == {"sgd", "adam"}
    lin = parse_param("x=0:1")
    xs = [float(sample(lin, rng)) for _ in range(2000)]
    assert 0.45 < sum(xs) / len(xs) < 0.55


def test_aggregate_and_rank() -> None:
    vals = [0.5, float("nan"), 0.9, 0.7]
    assert aggregate(vals, "max") == 0.9
    assert aggregate(vals, "min") == 0.5
    assert aggregate(vals, "last") == 0.7
    assert math.isclose(aggregate(vals, "avg") or 0, 0.7)
    assert aggregate([], "max") is None
    assert default_goal("min") == "min" and default_goal("last") == "max"
    runs = [
        HyperRun(index=0, params={}, value=0.5),
        HyperRun(index=1, params={}, value=None),
        HyperRun(index=2, params={}, value=0.9),
        HyperRun(index=3, params={}, value=0.5),
    ]
    assert [r.index for r in rank(runs, "max")] == [2, 0, 3, 1]
    assert [r.index for r in rank(runs, "min")] == [0, 3, 2, 1]
