"""The activities the workflows call, as typed definitions.

Workflows name an activity by a method of these classes, never by a string:
`workflow.start_activity_method(MachineActivityDefs.prepare_workspace, PrepareInput(...))`
gives the activity's name, its one input model and its result type. `activities/`
implements each class by subclassing it, so mypy checks every implementation's signature
against the definition here. Each takes one pydantic model and returns one (or None).

The `name=`s are written into histories: never change one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from conjure.workflows.hyper_models import (
    HyperMetricInput,
    HyperMetricResult,
    HyperSuggestInput,
    HyperSuggestResult,
)
from conjure.workflows.models import (
    AllocateInput,
    AllocateResult,
    CleanupInput,
    DescribeMachinesInput,
    DescribeMachinesResult,
    EnvInput,
    EnvResult,
    ExecuteInput,
    ExecuteResult,
    ForgetSecretsInput,
    ListMachinesInput,
    ListMachinesResult,
    MachineInfo,
    MachineReadyInput,
    MountInput,
    MountResult,
    PrepareInput,
    PrepareResult,
    ProvisionInput,
    ProvisionResult,
    PushInput,
    PushResult,
    SaveInput,
    SaveResult,
    SignalContainerInput,
    TerminateInput,
)

_DEFN = "__temporal_activity_definition"


class _Defs:
    """Base of every definition class: `all()` is the implementation's bound methods of
    every activity its definition class declares, for `Worker(activities=...)`."""

    def all(self) -> list[Callable[..., Any]]:
        defs = next(c for c in type(self).__mro__ if _Defs in c.__bases__)
        return [getattr(self, name) for name, fn in vars(defs).items() if hasattr(fn, _DEFN)]


class MachineActivityDefs(_Defs):
    """Machine-local activities, on the leased machine's own task queue (the agent)."""

    @activity.defn(name="machine_ready")
    def machine_ready(self, inp: MachineReadyInput) -> MachineInfo:
        raise NotImplementedError

    @activity.defn(name="prepare_workspace")
    def prepare_workspace(self, inp: PrepareInput) -> PrepareResult:
        raise NotImplementedError

    @activity.defn(name="ensure_environment")
    def ensure_environment(self, inp: EnvInput) -> EnvResult:
        raise NotImplementedError

    @activity.defn(name="push_environment")
    def push_environment(self, inp: PushInput) -> PushResult:
        raise NotImplementedError

    @activity.defn(name="mount_resources")
    def mount_resources(self, inp: MountInput) -> MountResult:
        raise NotImplementedError

    @activity.defn(name="execute")
    def execute(self, inp: ExecuteInput) -> ExecuteResult:
        raise NotImplementedError

    @activity.defn(name="signal_container")
    def signal_container(self, inp: SignalContainerInput) -> None:
        raise NotImplementedError

    @activity.defn(name="save_outputs")
    def save_outputs(self, inp: SaveInput) -> SaveResult:
        raise NotImplementedError

    @activity.defn(name="cleanup_workspace")
    def cleanup_workspace(self, inp: CleanupInput) -> None:
        raise NotImplementedError


class ProviderActivityDefs(_Defs):
    """Provider activities, on the control task queue: they talk to the cloud (or this host)."""

    @activity.defn(name="provision_machine")
    def provision_machine(self, inp: ProvisionInput) -> ProvisionResult:
        raise NotImplementedError

    @activity.defn(name="terminate_machine")
    def terminate_machine(self, inp: TerminateInput) -> None:
        raise NotImplementedError

    @activity.defn(name="list_machines")
    def list_machines(self, inp: ListMachinesInput) -> ListMachinesResult:
        raise NotImplementedError

    @activity.defn(name="describe_machines")
    def describe_machines(self, inp: DescribeMachinesInput) -> DescribeMachinesResult:
        raise NotImplementedError


class PipelineActivityDefs(_Defs):
    """Control-queue activities of pipelines."""

    @activity.defn(name="allocate_run_id")
    async def allocate_run_id(self, inp: AllocateInput) -> AllocateResult:
        raise NotImplementedError


class HyperActivityDefs(_Defs):
    """Control-queue activities of hyperparameter searches."""

    @activity.defn(name="hyper_metric")
    def hyper_metric(self, inp: HyperMetricInput) -> HyperMetricResult:
        raise NotImplementedError

    @activity.defn(name="hyper_suggest")
    def hyper_suggest(self, inp: HyperSuggestInput) -> HyperSuggestResult:
        raise NotImplementedError


class SecretActivityDefs(_Defs):
    """Control-queue activity: a final run's secret values leave the store."""

    @activity.defn(name="forget_secrets")
    def forget_secrets(self, inp: ForgetSecretsInput) -> bool:
        raise NotImplementedError
