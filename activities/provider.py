"""Provider activities: run on the control worker, talk to the cloud (or this host)."""

from __future__ import annotations

from temporalio import activity

from infra.config import Settings
from infra.providers import get_provider
from workflows.models import (
    DescribeMachinesInput,
    DescribeMachinesResult,
    ProvisionInput,
    ProvisionResult,
    TerminateInput,
)

# Provider states that mean the instance is gone for good (reclaimed spot, deleted).
GONE_STATES = ("terminated", "reclaimed", "missing")


class ProviderActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="provision_machine")
    def provision_machine(self, inp: ProvisionInput) -> ProvisionResult:
        provider = get_provider(inp.provider)
        rec = provider.provision(self.settings, inp.machine_id, inp.machine_type)
        return ProvisionResult(
            machine_id=inp.machine_id,
            task_queue=rec.task_queue,
            instance_id=str(getattr(rec, "pid", "") or getattr(rec, "instance_id", "")),
        )

    @activity.defn(name="terminate_machine")
    def terminate_machine(self, inp: TerminateInput) -> None:
        get_provider(inp.provider).terminate(self.settings, inp.machine_id)

    @activity.defn(name="describe_machines")
    def describe_machines(self, inp: DescribeMachinesInput) -> DescribeMachinesResult:
        """Which of these machines the provider reports gone (reclaimed, terminated)."""
        gone: dict[str, str] = {}
        for m in inp.machines:
            rec = get_provider(m.provider).describe(self.settings, m.machine_id)
            state = "missing" if rec is None else str(getattr(rec, "state", ""))
            if state in GONE_STATES:
                gone[m.machine_id] = state
        return DescribeMachinesResult(gone=gone)

    def all(self) -> list:
        return [self.provision_machine, self.terminate_machine, self.describe_machines]
