"""The durable contract of hyperparameter searches (workflows/hyper.py), and the pure
functions the CLI, the workflow and the tests share: parsing `--param`, `:name:`
substitution, the grid, random sampling and metric aggregation.

    --param rate=0.001,0.01,0.1          values: the grid's axis, or a random choice
    --param rate=0.0001:0.1:log          a range MIN:MAX[:SCALE[:TYPE]] (random, bayes)
                                         SCALE linear | log | reverse_log, TYPE float | int
                                         (reverse_log: 1 - value is log-scaled, MAX < 1)

The command names each parameter as `:name:` where its value goes (Spell's syntax).
New fields always get a default, so histories written by an older Conjure still decode.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field

from conjure.workflows.models import RunOptions, RunSpec
from conjure.workflows.stop_conditions import StopCondition

KINDS = ("grid", "random", "bayes")
SCALES = ("linear", "log", "reverse_log")
TYPES = ("float", "int")
AGGS = ("max", "min", "last", "avg")
MAX_RUNS = 500  # one search's runs; its history stays well under Temporal's limits

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*):")


class HyperParam(BaseModel):
    name: str
    values: list[str] = Field(default_factory=list)  # a list of values, kept as given
    low: float = 0.0  # or a range (when values is empty)
    high: float = 0.0
    scale: str = "linear"
    type: str = "float"

    @property
    def is_range(self) -> bool:
        return not self.values

    def describe(self) -> str:
        if self.values:
            return f"{self.name}={','.join(self.values)}"
        return f"{self.name}={self.low:g}:{self.high:g}:{self.scale}:{self.type}"


class HyperState(str, Enum):
    RUNNING = "Running"
    COMPLETE = "Complete"
    STOPPED = "Stopped"
    FAILED = "Failed"  # bayes: no suggestion could be made


class HyperInput(BaseModel):
    hyper_id: int
    kind: str  # grid | random | bayes
    params: list[HyperParam]
    spec: RunSpec  # its command is the template with :name: placeholders
    num_runs: int = 0  # random and bayes; a grid runs every combination
    parallel: int = 0  # runs at once; 0: no limit of its own (the pool's still applies)
    metric: str = ""
    metric_agg: str = "last"
    goal: str = "max"  # max | min: which end of the metric is best
    options: RunOptions = Field(default_factory=RunOptions)
    pool_workflow_id: str = "conjure-pool"
    pool_shards: int = 1  # runs lease from their shard of it (workflows/pool_shards.py)
    pool_shard_key: str = "run"
    stop_conditions: list[StopCondition] = Field(default_factory=list)
    seed: int = 0  # the random draws' or the bayes sampler's seed; 0: none given


class HyperRun(BaseModel):
    index: int  # 0-based, in the order the runs were started
    params: dict[str, str]
    run_id: int | None = None
    state: str = "Pending"  # Pending, then the run's own state
    reason: str = ""
    value: float | None = None  # the metric, aggregated, once the run ended
    points: int = 0  # how many values of the metric the run logged
    done: bool = False  # the run ended (and its value, if any, is final)


class HyperStatus(BaseModel):
    hyper_id: int
    kind: str
    state: HyperState = HyperState.RUNNING
    command: str = ""
    params: list[HyperParam] = Field(default_factory=list)
    metric: str = ""
    metric_agg: str = "last"
    goal: str = "max"
    parallel: int = 0
    planned: int = 0  # how many runs the search makes in all
    runs: list[HyperRun] = Field(default_factory=list)
    created: datetime | None = None
    ended: datetime | None = None
    reason: str = ""

    def ranked(self) -> list[HyperRun]:
        return rank(self.runs, self.goal)

    @property
    def best(self) -> HyperRun | None:
        r = self.ranked()
        return r[0] if r and r[0].value is not None else None


class HyperMetricInput(BaseModel):
    run_id: int
    metric: str
    agg: str = "last"


class HyperMetricResult(BaseModel):
    value: float | None = None
    points: int = 0


class HyperTrial(BaseModel):
    params: dict[str, str]
    value: float | None = None  # None: still running, or it logged no value
    done: bool = False  # the run ended


class HyperSuggestInput(BaseModel):
    params: list[HyperParam]
    goal: str = "max"
    trials: list[HyperTrial] = Field(default_factory=list)
    seed: int = 0


class HyperSuggestResult(BaseModel):
    params: dict[str, str]


# --- parsing --------------------------------------------------------------------------


def parse_param(text: str) -> HyperParam:
    """`rate=0.1,0.2` or `rate=0.001:1:log[:float]`; ValueError with a clear message."""
    name, eq, body = (text or "").partition("=")
    name = name.strip()
    if not eq:
        raise ValueError(f"{text!r} is not NAME=VALUES or NAME=MIN:MAX[:SCALE[:TYPE]]")
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a parameter name (letters, digits, '_')")
    body = body.strip()
    if not body:
        raise ValueError(f"{name}: no values given")
    if ":" not in body:
        values = [v.strip() for v in body.split(",")]
        if any(not v for v in values):
            raise ValueError(f"{name}: an empty value in {body!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: a value is given twice in {body!r}")
        return HyperParam(name=name, values=values)
    parts = [p.strip() for p in body.split(":")]
    if len(parts) > 4:
        raise ValueError(f"{name}: {body!r} is not MIN:MAX[:SCALE[:TYPE]]")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"{name}: MIN and MAX must be numbers in {body!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{name}: MIN must be below MAX in {body!r}")
    scale = parts[2] if len(parts) > 2 and parts[2] else "linear"
    kind = parts[3] if len(parts) > 3 and parts[3] else "float"
    if scale not in SCALES:
        raise ValueError(f"{name}: scale {scale!r} is not one of {', '.join(SCALES)}")
    if kind not in TYPES:
        raise ValueError(f"{name}: type {kind!r} is not one of {', '.join(TYPES)}")
    if scale == "log" and low <= 0:
        raise ValueError(f"{name}: a log range needs MIN above 0")
    if scale == "reverse_log" and high >= 1:
        raise ValueError(f"{name}: a reverse_log range needs MAX below 1 (1 - value is log-scaled)")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ValueError(f"{name}: an int range needs whole MIN and MAX")
    return HyperParam(name=name, low=low, high=high, scale=scale, type=kind)


def placeholders(command: str) -> list[str]:
    """The `:name:` placeholders of a command, in order, each once."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(command)))


def check_search(kind: str, command: str, params: Sequence[HyperParam], num_runs: int) -> int:
    """Validate a search; returns how many runs it makes. ValueError with a clear message."""
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a search kind ({', '.join(KINDS)})")
    if not params:
        raise ValueError("give at least one --param")
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--param {twice[0]} is given twice")
    used = placeholders(command)
    undefined = [n for n in used if n not in names]
    if undefined:
        raise ValueError(
            f"the command names :{undefined[0]}:, which no --param defines "
            f"(defined: {', '.join(names)})"
        )
    unused = [n for n in names if n not in used]
    if unused:
        raise ValueError(f"--param {unused[0]} is not used in the command (write :{unused[0]}:)")
    if kind == "grid":
        ranges = [p.name for p in params if p.is_range]
        if ranges:
            raise ValueError(
                f"--param {ranges[0]}: a grid takes a list of values (a,b,c), not a range"
            )
        total = math.prod(len(p.values) for p in params)
    else:
        if num_runs < 1:
            raise ValueError(f"a {kind} search needs --num-runs of at least 1")
        total = num_runs
    if total > MAX_RUNS:
        raise ValueError(f"the search would make {total} runs; at most {MAX_RUNS}")
    return total


def substitute(command: str, values: dict[str, str]) -> str:
    """Each `:name:` of the command replaced by its value (unknown names stay)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), command)


# --- choosing values ------------------------------------------------------------------


def grid(params: Sequence[HyperParam]) -> list[dict[str, str]]:
    """Every combination, the last parameter varying fastest."""
    names = [p.name for p in params]
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(p.values for p in params))
    ]


def format_value(p: HyperParam, x: float) -> str:
    if p.type == "int":
        return str(int(round(x)))
    return f"{x:.6g}"


def sample(p: HyperParam, rng: random.Random) -> str:
    """One value of p: a uniform choice among its values, or a draw from its range on its
    scale (log: uniform in log space; reverse_log: 1 - value uniform in log space, so
    values crowd towards MAX, as momentum 0.9 .. 0.999 wants)."""
    if p.values:
        return p.values[rng.randrange(len(p.values))]
    u = rng.random()
    if p.scale == "log":
        x = math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low)))
    elif p.scale == "reverse_log":
        lo, hi = math.log(1 - p.high), math.log(1 - p.low)
        x = 1 - math.exp(lo + u * (hi - lo))
    else:
        x = p.low + u * (p.high - p.low)
    x = min(max(x, p.low), p.high)
    return format_value(p, x)


def sample_all(params: Sequence[HyperParam], rng: random.Random) -> dict[str, str]:
    return {p.name: sample(p, rng) for p in params}


# --- metrics --------------------------------------------------------------------------


def aggregate(values: Iterable[float], agg: str) -> float | None:
    """max, min, last or avg of the finite values; None when there are none."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return None
    if agg == "max":
        return max(vals)
    if agg == "min":
        return min(vals)
    if agg == "avg":
        return sum(vals) / len(vals)
    return vals[-1]


def default_goal(agg: str) -> str:
    """Best is the highest value, unless the runs are judged by their minimum (a loss)."""
    return "min" if agg == "min" else "max"


def rank(runs: Iterable[HyperRun], goal: str) -> list[HyperRun]:
    """Best first; runs without a value last, in their order."""
    runs = list(runs)
    scored = [r for r in runs if r.value is not None]
    scored.sort(key=lambda r: (r.value if goal == "min" else -(r.value or 0.0), r.index))
    return scored + [r for r in runs if r.value is None]
