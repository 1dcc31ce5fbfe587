"""The machine pool: an entity workflow that owns every machine (of its shard).

Runs signal `request_lease`; the pool answers with a `lease_granted` (or
`lease_failed`) signal to the run. Machines are provisioned through activities on
the control queue, checked for readiness on their own queue, kept idle with a
durable timer after a run, and terminated when the timer fires.

Limits: `max_concurrent_runs` (runs beyond it wait, first come first served) and
`max_machines` per machine type (a run of a full type waits, without holding up
runs of other types). A reconciler (workflows/pool_reconcile.py) periodically
terminates provider instances tagged as Conjure's that the pool does not know,
and idle machines whose agent stopped answering. `configure` changes the config
of the running pool; the `terminate_machine` update ends one machine.

With `pool_shards` > 1 there is one such workflow per shard, each with its share of
the limits (workflows/pool_shards.py); the default is one, with the old id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from conjure.workflows.activity_defs import MachineActivityDefs, ProviderActivityDefs
    from conjure.workflows.keys import machine_task_queue
    from conjure.workflows.models import (
        CancelLeaseRequest,
        DescribeMachinesInput,
        Lease,
        LeaseRequest,
        Machine,
        MachineReadyInput,
        MachineState,
        PoolConfig,
        PoolConfigure,
        PoolInput,
        PoolState,
        PoolView,
        ProvisionInput,
        ReleaseRequest,
        TerminateInput,
        TerminateMachineRequest,
        TerminateMachineResult,
    )
    from conjure.workflows.pool_shards import new_machine_id
    from conjure.workflows.run_inbox import RunInbox
from conjure.workflows.pool_reconcile import ReconcilerMixin

A = TypeVar("A")

PROVIDER_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))


@workflow.defn
class PoolWorkflow(ReconcilerMixin):
    @workflow.init
    def __init__(self, inp: PoolInput) -> None:
        self.config = inp.config
        self.state = inp.state or PoolState()
        self._wake = False
        self._in_flight = 0
        self._cancelled: set[str] = set()
        self._reconciling = False
        self._v2 = False

    @workflow.run
    async def run(self, inp: PoolInput) -> None:
        if self.config.health_check_seconds > 0 and workflow.patched("machine-health-check"):
            asyncio.create_task(self._health_loop())
        # Histories written before the reconciler existed replay without it.
        self._v2 = workflow.patched("pool-reconciler")
        while True:
            self._dispatch()
            self._expire_idle()
            if self._v2:
                self._maybe_reconcile()
            self._wake = False
            timeout = self._next_expiry()
            if self._v2:
                timeout = _earliest(timeout, self._next_reconcile())
            try:
                await workflow.wait_condition(lambda: self._wake, timeout=timeout)
            except asyncio.TimeoutError:
                pass
            if (
                workflow.info().is_continue_as_new_suggested()
                and self._in_flight == 0
                and not self._wake
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(PoolInput(config=self.config, state=self.state))

    # --- messages -------------------------------------------------------------------

    @workflow.signal
    def request_lease(self, req: LeaseRequest) -> None:
        if any(q.run_workflow_id == req.run_workflow_id for q in self.state.queue):
            return  # repeated request: already queued
        if any(m.run_workflow_id == req.run_workflow_id for m in self.state.machines.values()):
            return  # already leased or being provisioned for it
        self._cancelled.discard(req.run_workflow_id)
        self.state.queue.append(req)
        self._wake = True

    @workflow.signal
    def cancel_lease(self, req: CancelLeaseRequest) -> None:
        self.state.queue = [q for q in self.state.queue if q.run_workflow_id != req.run_workflow_id]
        self._cancelled.add(req.run_workflow_id)
        self._wake = True

    @workflow.signal
    def release(self, req: ReleaseRequest) -> None:
        m = self.state.machines.get(req.machine_id)
        if m is None or m.run_workflow_id != req.run_workflow_id:
            return  # repeated or stale release
        m.run_workflow_id = None
        if req.image and req.image not in m.images:
            m.images.append(req.image)
        if m.terminate_after_run:
            self._start_terminate(m, "terminated by request after its run")
        elif req.healthy:
            m.state = MachineState.IDLE
            m.idle_since = workflow.now()
        else:
            self._start_terminate(m)
        self._wake = True

    @workflow.signal
    def configure(self, req: PoolConfigure) -> None:
        """New settings for the running pool; the same settings again are a no-op."""
        new = req.config.model_dump()
        old = self.config.model_dump()
        names = [f for f in (req.fields or list(new)) if f in new]
        changed = {f: new[f] for f in names if old.get(f) != new[f]}
        if changed:
            self.config = PoolConfig.model_validate({**old, **changed})
            self._wake = True

    @workflow.update
    def terminate_machine(self, req: TerminateMachineRequest) -> TerminateMachineResult:
        m = self.state.machines[req.machine_id]
        after_run = None
        if m.state == MachineState.TERMINATING:
            pass
        elif m.state == MachineState.IDLE or req.force or not m.run_workflow_id:
            self._start_terminate(
                m, "terminated by request" + (" (--force)" if m.run_workflow_id else "")
            )
        else:
            m.terminate_after_run = True
            after_run = m.run_workflow_id
        self._wake = True
        return TerminateMachineResult(machine_id=m.id, state=m.state, after_run=after_run)

    @terminate_machine.validator
    def _check_terminate(self, req: TerminateMachineRequest) -> None:
        if req.machine_id not in self.state.machines:
            raise ValueError(f"machine {req.machine_id} is not in the pool")

    @workflow.query
    def view(self) -> PoolView:
        return PoolView(
            machines=list(self.state.machines.values()),
            queue=list(self.state.queue),
            config=self.config,
            last_reconcile=self.state.last_reconcile,
            orphans_terminated=self.state.orphans_terminated,
            unresponsive_terminated=self.state.unresponsive_terminated,
        )

    # --- scheduling -----------------------------------------------------------------

    def _active(self) -> int:
        return sum(
            1
            for m in self.state.machines.values()
            if m.state in (MachineState.BUSY, MachineState.PROVISIONING) and m.run_workflow_id
        )

    def _provider(self, req: LeaseRequest) -> str:
        """The machine type's own provider (catalog or config), else the pool's."""
        if req.machine_type.provider and workflow.patched("machine-type-provider"):
            return req.machine_type.provider
        return self.config.provider

    def _type_full(self, machine_type: str, provider: str = "") -> bool:
        """At max_machines for the type, or for its provider (a key naming a provider)."""
        live = [m for m in self.state.machines.values() if m.state != MachineState.TERMINATING]
        cap = self.config.max_machines.get(machine_type, 0)
        if cap and sum(1 for m in live if m.machine_type == machine_type) >= cap:
            return True
        pcap = self.config.max_machines.get(provider, 0) if provider else 0
        return bool(pcap) and sum(1 for m in live if m.provider == provider) >= pcap

    def _dispatch(self) -> None:
        active = self._active()
        limit = self.config.max_concurrent_runs
        waiting: list[LeaseRequest] = []
        queue, self.state.queue = self.state.queue, waiting
        for req in queue:
            if limit and active >= limit:
                waiting.append(req)  # first come, first served: the head waits, so do the others
                continue
            m = self._pick_idle(req)
            provider = self._provider(req) if m is None else ""
            if m is None and self._type_full(req.machine_type.name, provider):
                waiting.append(req)  # its type is at max_machines; other types may go on
                continue
            if m is not None:
                m.state = MachineState.BUSY
                m.run_workflow_id = req.run_workflow_id
                m.idle_since = None
                m.runs_served += 1
                asyncio.create_task(self._grant(m, req, reused=True))
            else:
                machine_id = new_machine_id(provider, self.config.shard, workflow.uuid4().hex[:10])
                m = Machine(
                    id=machine_id,
                    machine_type=req.machine_type.name,
                    provider=provider,
                    task_queue=machine_task_queue(machine_id),
                    state=MachineState.PROVISIONING,
                    created=workflow.now(),
                    run_workflow_id=req.run_workflow_id,
                    runs_served=1,
                    price_per_hour=req.machine_type.price_per_hour,
                )
                self.state.machines[machine_id] = m
                asyncio.create_task(self._provision(m, req))
            active += 1

    def _pick_idle(self, req: LeaseRequest) -> Machine | None:
        idle = [
            m
            for m in self.state.machines.values()
            if m.state == MachineState.IDLE and m.machine_type == req.machine_type.name
        ]
        if (
            not req.machine_type.spot
            and any(m.spot for m in idle)
            and workflow.patched("pool-on-demand-not-spot")
        ):
            # Asked on demand (--spot-fallback): an idle spot machine of the type will not do.
            idle = [m for m in idle if not m.spot]
        if not idle:
            return None
        # Prefer a machine that already holds the run's image, then the most recently used.
        idle.sort(
            key=lambda m: (
                bool(req.image_hint and req.image_hint in m.images),
                m.idle_since or m.created,
                m.id,
            ),
            reverse=True,
        )
        return idle[0]

    async def _provision(self, m: Machine, req: LeaseRequest) -> None:
        self._in_flight += 1
        try:
            provisioned = await workflow.execute_activity_method(
                ProviderActivityDefs.provision_machine,
                ProvisionInput(machine_id=m.id, machine_type=req.machine_type, provider=m.provider),
                start_to_close_timeout=timedelta(minutes=15),
                retry_policy=PROVIDER_RETRY,
            )
            m.spot = provisioned.spot
            info = await workflow.execute_activity_method(
                MachineActivityDefs.machine_ready,
                MachineReadyInput(machine_id=m.id),
                task_queue=m.task_queue,
                schedule_to_start_timeout=timedelta(
                    seconds=self.config.machine_ready_timeout_seconds
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
            m.images = list(info.images)
            if m.state == MachineState.TERMINATING:
                # Terminated (--force) while it booted: the run waits for another machine.
                self.state.queue.insert(0, req)
                return
            m.state = MachineState.BUSY
            await self._grant(m, req, reused=False)
        except ActivityError as e:
            if m.state == MachineState.TERMINATING and m.reason.startswith("terminated by"):
                self.state.queue.insert(0, req)  # terminated by request while it booted
                return
            reason = str(e.cause or e)
            m.run_workflow_id = None
            self._start_terminate(m)
            await self._signal_run(
                req.run_workflow_id, RunInbox.lease_failed, f"no machine: {reason}"
            )
        finally:
            self._in_flight -= 1
            self._wake = True

    async def _grant(self, m: Machine, req: LeaseRequest, reused: bool) -> None:
        self._in_flight += 1
        try:
            await self._grant_now(m, req, reused)
        finally:
            self._in_flight -= 1

    async def _grant_now(self, m: Machine, req: LeaseRequest, reused: bool) -> None:
        if req.run_workflow_id in self._cancelled:
            self._cancelled.discard(req.run_workflow_id)
            self._make_idle(m)
            return
        lease = Lease(
            machine_id=m.id,
            task_queue=m.task_queue,
            machine_type=m.machine_type,
            provider=m.provider,
            reused=reused,
            spot=m.spot,
        )
        if not await self._signal_run(req.run_workflow_id, RunInbox.lease_granted, lease):
            self._make_idle(m)

    async def _signal_run(self, workflow_id: str, signal: Callable[[Any, A], None], arg: A) -> bool:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(signal, arg)
            return True
        except Exception:  # the run is gone (terminated or finished)
            return False

    def _make_idle(self, m: Machine) -> None:
        m.run_workflow_id = None
        m.state = MachineState.IDLE
        m.idle_since = workflow.now()
        self._wake = True

    # --- idle machines --------------------------------------------------------------

    def _next_expiry(self) -> timedelta | None:
        now = workflow.now()
        waits = [
            (m.idle_since + timedelta(seconds=self.config.idle_timeout_seconds) - now)
            for m in self.state.machines.values()
            if m.state == MachineState.IDLE and m.idle_since
        ]
        if not waits:
            return None
        return max(min(waits), timedelta(milliseconds=1))

    def _expire_idle(self) -> None:
        now = workflow.now()
        for m in list(self.state.machines.values()):
            if (
                m.state == MachineState.IDLE
                and m.idle_since
                and now >= m.idle_since + timedelta(seconds=self.config.idle_timeout_seconds)
            ):
                self._start_terminate(m)

    # --- machines the provider reports gone ---------------------------------------------

    async def _health_loop(self) -> None:
        """Ask the provider, now and then, whether each ready machine still exists; one
        that is gone (a reclaimed spot instance) is dropped and terminated, and its run
        told at once (it ends Interrupted)."""
        every = timedelta(seconds=self.config.health_check_seconds)
        while True:
            await workflow.wait_condition(lambda: any(self._checkable()))
            await workflow.sleep(every)
            machines = list(self._checkable())
            if not machines:
                continue
            try:
                found = await workflow.execute_activity_method(
                    ProviderActivityDefs.describe_machines,
                    DescribeMachinesInput(
                        machines=[
                            TerminateInput(machine_id=m.id, provider=m.provider) for m in machines
                        ]
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=RetryPolicy(maximum_attempts=2),
                )
            except ActivityError:
                continue  # the provider API is unreachable: ask again next time
            for machine_id, state in found.gone.items():
                m = self.state.machines.get(machine_id)
                if m is None or m.state not in (MachineState.BUSY, MachineState.IDLE):
                    continue
                if m.run_workflow_id:
                    await self._signal_run(
                        m.run_workflow_id,
                        RunInbox.machine_lost,
                        f"the provider reports machine {m.id} {state}",
                    )
                self._start_terminate(m)
            self._wake = True  # lets the main loop consider continue-as-new

    def _checkable(self) -> Iterator[Machine]:
        return (
            m for m in self.state.machines.values()
            if m.state in (MachineState.BUSY, MachineState.IDLE)
        )  # fmt: skip

    def _start_terminate(self, m: Machine, reason: str = "") -> None:
        if m.state == MachineState.TERMINATING:
            return
        m.state = MachineState.TERMINATING
        if self._v2:
            m.ended = workflow.now()
            m.reason = reason or ("idle timeout" if m.idle_since else "unhealthy")
        asyncio.create_task(self._terminate(m))

    async def _terminate(self, m: Machine) -> None:
        self._in_flight += 1
        try:
            await workflow.execute_activity_method(
                ProviderActivityDefs.terminate_machine,
                TerminateInput(machine_id=m.id, provider=m.provider),
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
            )
            self.state.machines.pop(m.id, None)
        finally:
            self._in_flight -= 1
            self._wake = True


def _earliest(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
