"""Early stopping: `--stop-condition "NAME OP VALUE[ : K]"`, and the child workflow
that evaluates conditions over the run's metrics.

Semantics (the spec's): OP is one of `< > <= >=`. From the K-th logged value of
NAME on (every value when K is absent), the first value that satisfies the
condition stops the run gracefully, as `conjure stop` would. Values are counted
per metric name, 1-based, in the order the run logged them; the agent numbers
them (`MetricPoint.index`), so a batch sent twice (an agent restart) counts once.

Parsing and evaluation are pure functions, shared by the CLI, the workflow and
the tests. The workflow (workflows/stop_condition_workflow.py) receives batches of
points as signals (never the whole metric stream: only the names some condition
refers to) and, when a condition fires, signals its parent run `stop` with the reason.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable

from pydantic import BaseModel, Field

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(
    rf"^\s*(?P<name>[^\s<>=:]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>{_NUMBER})\s*"
    r"(?::\s*(?P<k>[-+]?\d+)\s*)?$"
)


class StopCondition(BaseModel):
    name: str
    op: str
    value: float
    start: int | None = None  # K: checked from the K-th logged value on; None: every value
    text: str = ""

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.value)

    def describe(self) -> str:
        return self.text or f"{self.name} {self.op} {self.value:g}" + (
            f" : {self.start}" if self.start is not None else ""
        )


class MetricPoint(BaseModel):
    name: str
    value: float
    index: int  # 1-based count of this name's values, numbered by the agent
    step: int | None = None


class MetricBatch(BaseModel):
    points: list[MetricPoint] = Field(default_factory=list)


class ConditionHit(BaseModel):
    condition: StopCondition
    value: float
    index: int

    def reason(self) -> str:
        return (
            f"stop condition `{self.condition.describe()}` fired on value {self.value:g} "
            f"of {self.condition.name} at count {self.index}"
        )


class StopConditionState(BaseModel):
    seen: dict[str, int] = Field(default_factory=dict)  # name -> highest index evaluated
    hit: ConditionHit | None = None
    points: int = 0


class StopConditionInput(BaseModel):
    run_id: int
    conditions: list[StopCondition]
    state: StopConditionState | None = None


class StopConditionResult(BaseModel):
    hit: ConditionHit | None = None
    points: int = 0


class StopRequest(BaseModel):
    """The `stop` signal's argument (all optional: a bare signal is `conjure stop`)."""

    reason: str = ""
    grace_seconds: float | None = None
    source: str = ""  # "cli", "stop-condition", ...


def parse_stop_condition(text: str) -> StopCondition:
    """`"keras/val_acc < 0.5 : 10"` -> StopCondition; ValueError with a clear message."""
    m = _CONDITION.match(text or "")
    if not m:
        raise ValueError(
            f"{text!r} is not NAME OP VALUE[ : K] with OP one of < > <= >= "
            '(e.g. "keras/val_acc < 0.5 : 10")'
        )
    value = float(m["value"])
    if not math.isfinite(value):
        raise ValueError(f"{text!r}: VALUE must be a finite number")
    start = None
    if m["k"] is not None:
        start = int(m["k"])
        if start < 1:
            raise ValueError(f"{text!r}: K must be a whole number of at least 1")
    return StopCondition(name=m["name"], op=m["op"], value=value, start=start, text=text.strip())


def evaluate(
    conditions: list[StopCondition], state: StopConditionState, points: Iterable[MetricPoint]
) -> ConditionHit | None:
    """Feed points in order; returns the first hit (also kept in state.hit).

    A point whose index is not above the highest index already seen for its name is
    a repeat and is ignored, so re-sent batches are harmless.
    """
    if state.hit is not None:
        return state.hit
    for p in points:
        if p.index <= state.seen.get(p.name, 0):
            continue
        state.seen[p.name] = p.index
        state.points += 1
        if not math.isfinite(p.value):
            continue  # NaN/inf satisfy no comparison, but they count as logged values
        for c in conditions:
            if c.name == p.name and (c.start is None or p.index >= c.start) and c.holds(p.value):
                state.hit = ConditionHit(condition=c, value=p.value, index=p.index)
                return state.hit
    return None


def watched_names(conditions: list[StopCondition]) -> list[str]:
    return sorted({c.name for c in conditions})


def child_workflow_id(run_id: int) -> str:
    return f"run-{run_id}-stop-conditions"
