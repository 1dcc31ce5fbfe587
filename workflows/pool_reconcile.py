"""The pool's reconciler: what the provider has against what the pool knows.

Every `reconcile_interval_seconds` the pool lists the provider's instances tagged
as Conjure's (activity `list_machines`), terminates those of its shard it does not know
(orphans: a crash between provisioning and recording, a machine dropped while
its instance lived on), drops idle machines whose instance is gone, and asks
each idle machine's agent whether it still answers (`machine_ready` on the
machine's own queue): an agent silent for `agent_timeout_seconds` gets its
machine terminated and dropped. Busy machines are watched by their run (its
activities' heartbeat and schedule-to-start timeouts) and come back unhealthy.

Workflow code: no I/O, no clock but workflow.now().
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.activity_defs import MachineActivityDefs, ProviderActivityDefs
    from conjure.workflows.models import (
        ListMachinesInput,
        ListMachinesResult,
        Machine,
        MachineReadyInput,
        MachineState,
        TerminateInput,
    )
    from conjure.workflows.pool_shards import machine_shard

if TYPE_CHECKING:
    from conjure.workflows.models import PoolConfig, PoolState

GONE = ("terminated", "shutting-down")


class ReconcilerMixin:
    """Mixed into PoolWorkflow; uses its state, config and bookkeeping."""

    config: PoolConfig
    state: PoolState
    _reconciling: bool
    _in_flight: int
    _wake: bool

    def _start_terminate(self, m: Machine, reason: str = "") -> None:  # pragma: no cover
        raise NotImplementedError

    def _next_reconcile(self) -> timedelta | None:
        every = self.config.reconcile_interval_seconds
        if not every or self._reconciling:
            return None
        last = self.state.last_reconcile
        if last is None:
            return timedelta(milliseconds=1)
        due = last + timedelta(seconds=every) - workflow.now()
        return max(due, timedelta(milliseconds=1))

    def _maybe_reconcile(self) -> None:
        every = self.config.reconcile_interval_seconds
        if not every or self._reconciling:
            return
        now = workflow.now()
        last = self.state.last_reconcile
        if last is not None and now < last + timedelta(seconds=every):
            return
        self._reconciling = True
        self.state.last_reconcile = now
        asyncio.create_task(self._reconcile())

    async def _reconcile(self) -> None:
        self._in_flight += 1
        try:
            providers = [self.config.provider]
            providers += [p for p in self.config.other_providers if p not in providers]
            for provider in providers:
                try:
                    listed: ListMachinesResult | None = await workflow.execute_activity_method(
                        ProviderActivityDefs.list_machines,
                        ListMachinesInput(provider=provider),
                        start_to_close_timeout=timedelta(minutes=2),
                        retry_policy=RetryPolicy(maximum_attempts=3),
                    )
                except ActivityError:
                    listed = None  # the provider API is down: try again next round
                if listed is not None:
                    self._reap(listed, provider)
            idle = [m for m in self.state.machines.values() if m.state == MachineState.IDLE]
            if idle:
                await asyncio.gather(*(self._check_agent(m) for m in idle))
        finally:
            self._reconciling = False
            self._in_flight -= 1
            self._wake = True

    def _reap(self, listed: ListMachinesResult, provider: str) -> None:
        known = self.state.machines
        seen = {i.machine_id: i for i in listed.instances}
        for inst in listed.instances:
            if inst.state in GONE or inst.machine_id in known:
                continue
            if machine_shard(inst.machine_id) != self.config.shard:
                continue  # another shard's machine: that shard reconciles it
            self.state.orphans_terminated += 1
            asyncio.create_task(self._terminate_orphan(inst.machine_id, provider))
        for m in list(known.values()):
            if m.state != MachineState.IDLE or m.provider != provider:
                continue
            found = seen.get(m.id)
            if found is None or found.state in GONE:
                self._start_terminate(m, "its instance is gone")

    async def _terminate_orphan(self, machine_id: str, provider: str) -> None:
        self._in_flight += 1
        try:
            await workflow.execute_activity_method(
                ProviderActivityDefs.terminate_machine,
                TerminateInput(machine_id=machine_id, provider=provider),
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except ActivityError:
            pass  # the next round finds it again
        finally:
            self._in_flight -= 1

    async def _check_agent(self, m: Machine) -> None:
        try:
            info = await workflow.execute_activity_method(
                MachineActivityDefs.machine_ready,
                MachineReadyInput(machine_id=m.id),
                task_queue=m.task_queue,
                schedule_to_start_timeout=timedelta(seconds=self.config.agent_timeout_seconds),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError:
            if m.state == MachineState.IDLE and m.id in self.state.machines:
                self.state.unresponsive_terminated += 1
                self._start_terminate(m, "its agent stopped answering")
            return
        if m.state == MachineState.IDLE:
            m.images += [i for i in info.images if i not in m.images]
