"""Control-queue activities of hyperparameter searches (workflows/hyper.py).

`hyper_metric` reads a finished run's metric from the store and returns one value, so
the search's history holds a summary per run, never the metric stream. `hyper_suggest`
asks Optuna (a seeded TPE sampler over the runs so far, ask-and-tell) for the values of
the next run of a bayes search.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conjure.activities.store_backed import StoreBacked
from conjure.infra.metrics import read_metrics
from conjure.workflows.activity_defs import HyperActivityDefs
from conjure.workflows.hyper_models import (
    HyperMetricInput,
    HyperMetricResult,
    HyperParam,
    HyperSuggestInput,
    HyperSuggestResult,
    aggregate,
    format_value,
)


class HyperActivities(StoreBacked, HyperActivityDefs):
    @activity.defn(name="hyper_metric")
    def hyper_metric(self, inp: HyperMetricInput) -> HyperMetricResult:
        points = read_metrics(self.store, inp.run_id).get(inp.metric, [])
        return HyperMetricResult(
            value=aggregate((p.value for p in points), inp.agg), points=len(points)
        )

    @activity.defn(name="hyper_suggest")
    def hyper_suggest(self, inp: HyperSuggestInput) -> HyperSuggestResult:
        return HyperSuggestResult(params=suggest(inp))


def _distribution(p: HyperParam, optuna: Any) -> Any:
    d = optuna.distributions
    if p.values:
        return d.CategoricalDistribution(p.values)
    if p.type == "int":
        return d.IntDistribution(int(p.low), int(p.high), log=p.scale == "log")
    # reverse_log has no Optuna counterpart: sampled linearly (TPE adapts to the results)
    return d.FloatDistribution(p.low, p.high, log=p.scale == "log")


def _native(p: HyperParam, text: str) -> Any:
    if p.values:
        return text
    return int(text) if p.type == "int" else float(text)


def suggest(inp: HyperSuggestInput) -> dict[str, str]:
    """The next values to try: a TPE sampler seeded with inp.seed, told every run so far
    (finished ones with their value, running ones as running, so it spreads them)."""
    try:
        import optuna
    except ImportError:
        raise ApplicationError(
            "a bayes search needs Optuna on the control worker: pip install 'conjure[bayes]'",
            type="NoOptuna",
            non_retryable=True,
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.name: _distribution(p, optuna) for p in inp.params}
    by_name = {p.name: p for p in inp.params}
    sampler = optuna.samplers.TPESampler(
        seed=inp.seed + len(inp.trials), n_startup_trials=5, constant_liar=True
    )
    study = optuna.create_study(
        direction="minimize" if inp.goal == "min" else "maximize", sampler=sampler
    )
    for t in inp.trials:
        try:
            params = {k: _native(by_name[k], v) for k, v in t.params.items() if k in by_name}
        except (ValueError, KeyError):
            continue
        if set(params) != set(dists):
            continue
        if t.value is not None:
            state = optuna.trial.TrialState.COMPLETE
        elif t.done:  # ended without a value: nothing to learn from its values
            state = optuna.trial.TrialState.FAIL
        else:  # still running: the constant liar keeps the next suggestion away from it
            state = optuna.trial.TrialState.RUNNING
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=t.value if t.value is not None else None,
                state=state,
            )
        )
    trial = study.ask(dists)
    return {name: _format(by_name[name], trial.params[name]) for name in dists}


def _format(p: HyperParam, value: Any) -> str:
    if p.values:
        return str(value)
    return format_value(p, float(value))
