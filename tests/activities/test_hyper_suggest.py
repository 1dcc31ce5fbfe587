"""The bayes search's suggestions (Optuna's TPE sampler, ask-and-tell): values inside
their ranges and lists, the same suggestion for the same seed and results, and past
the start-up trials, suggestions near the best results so far."""

from __future__ import annotations

from conjure.activities.hyper import suggest
from conjure.workflows.hyper_models import HyperSuggestInput, HyperTrial, parse_param

PARAMS = [
    parse_param("rate=0.0001:0.1:log"),
    parse_param("layers=1:8::int"),
    parse_param("opt=sgd,adam"),
]


def test_suggestions_fit_the_params_and_repeat_for_a_seed() -> None:
    inp = HyperSuggestInput(params=PARAMS, goal="max", seed=3)
    first = suggest(inp)
    assert set(first) == {"rate", "layers", "opt"}
    assert 0.0001 <= float(first["rate"]) <= 0.1
    assert first["layers"].isdigit() and 1 <= int(first["layers"]) <= 8
    assert first["opt"] in ("sgd", "adam")
    assert suggest(inp) == first  # deterministic: same seed, same results so far
    running = inp.model_copy(update={"trials": [HyperTrial(params=first)]})
    assert set(suggest(running)) == set(first)  # a running trial is accepted


def test_suggestions_follow_the_results() -> None:
    """val = -(log10(rate) + 2)^2: best at rate 0.01. After 20 told results the
    suggestions lie much closer to it than uniform draws would."""
    import math

    p = [parse_param("rate=0.0001:0.1:log")]
    trials: list[HyperTrial] = []
    for _ in range(30):
        s = suggest(HyperSuggestInput(params=p, goal="max", seed=5, trials=trials))
        rate = float(s["rate"])
        trials.append(HyperTrial(params=s, value=-((math.log10(rate) + 2) ** 2), done=True))
    late = [abs(math.log10(float(t.params["rate"])) + 2) for t in trials[20:]]
    # uniform draws over 3 decades average 0.83 decades away from 0.01
    assert sum(late) / len(late) < 0.5, late
