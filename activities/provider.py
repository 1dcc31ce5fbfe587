"""Provider activities: run on the control worker, talk to the cloud (or this host)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conjure.infra.config import Settings
from conjure.infra.providers import get_provider
from conjure.infra.providers.base import ProviderError
from conjure.workflows.activity_defs import ProviderActivityDefs
from conjure.workflows.keys import machine_task_queue
from conjure.workflows.models import (
    DescribeMachinesInput,
    DescribeMachinesResult,
    ListMachinesInput,
    ListMachinesResult,
    ProvisionInput,
    ProvisionResult,
    TerminateInput,
)

# Provider states that mean the instance is gone for good (reclaimed spot, deleted).
GONE_STATES = ("terminated", "reclaimed", "missing")

T = TypeVar("T")


def _call(fn: Callable[..., T], *args: Any) -> T:
    """A provider problem retrying cannot fix is a non-retryable failure."""
    try:
        return fn(*args)
    except (ProviderError, ValueError) as e:
        raise ApplicationError(str(e), type="ProviderConfig", non_retryable=True) from None


class ProviderActivities(ProviderActivityDefs):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="provision_machine")
    def provision_machine(self, inp: ProvisionInput) -> ProvisionResult:
        provider = _call(get_provider, inp.provider)
        rec = _call(provider.provision, self.settings, inp.machine_id, inp.machine_type)
        return ProvisionResult(
            machine_id=inp.machine_id,
            task_queue=machine_task_queue(inp.machine_id),
            instance_id=rec.instance_id,
            spot=rec.spot,
        )

    @activity.defn(name="terminate_machine")
    def terminate_machine(self, inp: TerminateInput) -> None:
        _call(_call(get_provider, inp.provider).terminate, self.settings, inp.machine_id)

    @activity.defn(name="list_machines")
    def list_machines(self, inp: ListMachinesInput) -> ListMachinesResult:
        provider = _call(get_provider, inp.provider)
        recs = _call(provider.list_instances, self.settings)
        return ListMachinesResult(instances=[r for r in recs if r.machine_id])

    @activity.defn(name="describe_machines")
    def describe_machines(self, inp: DescribeMachinesInput) -> DescribeMachinesResult:
        """Which of these machines the provider reports gone (reclaimed, terminated)."""
        gone: dict[str, str] = {}
        for m in inp.machines:
            rec = get_provider(m.provider).describe(self.settings, m.machine_id)
            state = "missing" if rec is None else rec.state
            if state in GONE_STATES:
                gone[m.machine_id] = state
        return DescribeMachinesResult(gone=gone)
