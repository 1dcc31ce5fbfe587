"""The typed workflow contract: every activity the workflows call is implemented under
the name its definition declares, takes one model, and old payloads still decode."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel
from temporalio import activity

from conjure.activities.machine import MachineActivities
from conjure.activities.pipeline import PipelineActivities
from conjure.activities.provider import ProviderActivities
from conjure.workflows.activity_defs import (
    MachineActivityDefs,
    PipelineActivityDefs,
    ProviderActivityDefs,
)
from conjure.workflows.models import ExecuteInput, MachineReadyInput, SignalContainerInput

PAIRS = [
    (MachineActivityDefs, MachineActivities),
    (ProviderActivityDefs, ProviderActivities),
    (PipelineActivityDefs, PipelineActivities),
]


def _name(fn: object) -> str | None:
    defn = activity._Definition.from_callable(fn)  # type: ignore[arg-type]
    return defn.name if defn else None


@pytest.mark.parametrize("defs,impl", PAIRS, ids=[d.__name__ for d, _ in PAIRS])
def test_implementations_carry_the_declared_names(defs: type, impl: type) -> None:
    declared = {n: f for n, f in vars(defs).items() if _name(f)}
    assert declared
    for attr, fn in declared.items():
        impl_fn = getattr(impl, attr)
        assert impl_fn is not fn, f"{impl.__name__}.{attr} is not implemented"
        assert _name(impl_fn) == _name(fn), attr
        assert inspect.iscoroutinefunction(impl_fn) == inspect.iscoroutinefunction(fn), attr
        params = list(inspect.signature(fn).parameters.values())[1:]
        assert len(params) == 1, f"{attr} takes one model"
        hint = inspect.get_annotations(fn, eval_str=True)[params[0].name]
        assert issubclass(hint, BaseModel), attr


def test_all_lists_every_declared_activity() -> None:
    acts = object.__new__(ProviderActivities)
    assert sorted(_name(f) or "" for f in acts.all()) == [
        "describe_machines",
        "list_machines",
        "provision_machine",
        "terminate_machine",
    ]
    machine = object.__new__(MachineActivities)
    assert len(machine.all()) == 9


def test_payloads_of_older_histories_still_decode() -> None:
    # machine_ready took the bare machine id; signal_container a dict.
    assert MachineReadyInput.model_validate_json('"local-abc"').machine_id == "local-abc"
    sig = SignalContainerInput.model_validate({"run_id": 3, "kind": "kill", "grace": 5})
    assert (sig.run_id, sig.kind, sig.grace) == (3, "kill", 5.0)
    # execute took the spec's and options' fields flat.
    flat = {
        "run_id": 7,
        "image": "img:1",
        "command": "python train.py",
        "workspace": "/m/runs/7/ws",
        "workdir": "/conjure/repo",
        "binds": [{"host": "/h", "container": "/c"}],
        "env": {"A": "1"},
        "cpus": 2,
        "memory_gb": 4,
        "gpus": 1,
        "log_lines_per_window": 50,
        "log_window_seconds": 2.0,
        "secrets_key": "secrets/x.json",
        "hardware_metrics_seconds": 0,
        "metrics_workflow_id": "run-7-stop-conditions",
        "watch_metrics": ["loss"],
    }
    inp = ExecuteInput.model_validate(flat)
    assert inp.spec.command == "python train.py"
    assert inp.spec.env == {"A": "1"} and inp.spec.secrets_key == "secrets/x.json"
    mt = inp.spec.machine_type
    assert (mt.vcpus, mt.memory_gb, mt.gpus) == (2, 4, 1)
    assert (inp.prepared.workspace, inp.prepared.workdir) == ("/m/runs/7/ws", "/conjure/repo")
    assert inp.options.log_lines_per_window == 50 and inp.options.hardware_metrics_seconds == 0
    assert inp.binds[0].host == "/h" and inp.watch_metrics == ["loss"]
    # and the current shape round-trips
    assert ExecuteInput.model_validate_json(inp.model_dump_json()) == inp
