"""The signals a run receives from other workflows and from the CLI: its inbox.

A base class of RunWorkflow of its own, so the pool, the stop-condition child and
pipelines signal a run through these methods (`handle.signal(RunInbox.lease_granted,
lease)`) without importing the run workflow, which imports them.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.models import Lease
    from conjure.workflows.stop_conditions import StopRequest


class RunInbox:
    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.lease_error: str | None = None
        self.stop_requested = False
        self.kill_requested = False
        self.stop_request: StopRequest | None = None
        self.kill_request: StopRequest | None = None
        self.lost: str | None = None  # the machine is gone, says the provider

    @workflow.signal
    def lease_granted(self, lease: Lease) -> None:
        if self.lease is None:
            self.lease = lease

    @workflow.signal
    def lease_failed(self, reason: str) -> None:
        self.lease_error = reason

    @workflow.signal
    def stop(self, req: StopRequest | None = None) -> None:
        if not self.stop_requested:  # a repeated stop is a no-op
            self.stop_requested = True
            self.stop_request = req or StopRequest(source="cli")

    @workflow.signal
    def machine_lost(self, reason: str) -> None:
        """From the pool: the provider reports the leased machine gone (reclaimed)."""
        if self.lost is None:
            self.lost = reason

    @workflow.signal
    def kill(self, req: StopRequest | None = None) -> None:
        if not self.kill_requested:
            self.kill_requested = True
            self.kill_request = req or StopRequest(source="cli")
