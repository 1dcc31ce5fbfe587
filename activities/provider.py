"""Provider activities: run on the control worker, talk to the cloud (or this host)."""

from __future__ import annotations

from temporalio import activity

from infra.config import Settings
from infra.providers import get_provider
from workflows.models import ProvisionInput, ProvisionResult, TerminateInput


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

    def all(self) -> list:
        return [self.provision_machine, self.terminate_machine]
