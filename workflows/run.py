"""The run workflow: one durable workflow per run, `run-<N>`.

Requested -> Building -> Mounting -> Running -> Saving -> Pushing, ending in
Complete, Failed, Stopped, Killed or Interrupted. Every machine-local step is an
activity routed to the leased machine's own task queue. Logs and metrics never
pass through this workflow: the agent writes them to the object store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from conjure.workflows import cost, keys, run_outcome
    from conjure.workflows.activity_defs import MachineActivityDefs as Machine
    from conjure.workflows.activity_defs import SecretActivityDefs
    from conjure.workflows.models import (
        CancelLeaseRequest,
        CleanupInput,
        EnvInput,
        ExecuteInput,
        ExecuteResult,
        ForgetSecretsInput,
        Lease,
        LeaseRequest,
        MachineType,
        MountInput,
        MountResult,
        PrepareInput,
        PrepareResult,
        PushInput,
        PushResult,
        ReleaseRequest,
        RunAttempt,
        RunInput,
        RunState,
        RunStatus,
        SaveInput,
        SignalContainerInput,
        StateChange,
    )
    from conjure.workflows.pool import PoolWorkflow
    from conjure.workflows.run_inbox import RunInbox
    from conjure.workflows.stop_condition_workflow import StopConditionWorkflow
    from conjure.workflows.stop_conditions import (
        StopConditionInput,
        StopRequest,
        child_workflow_id,
        watched_names,
    )

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

STEP_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
# How long a leased machine may take to pick up its first task before it is judged dead.
PICKUP_TIMEOUT = timedelta(seconds=60)
EXECUTE_ATTEMPTS = 10
# Once the run's files are saved (or it was killed), the machine goes back to the pool
# while its workspace is cleaned, not after: one workflow task fewer before the run ends.
RELEASE_WITH_CLEANUP_PATCH = "run-release-with-cleanup"
# A stopped or killed run is final as soon as its program has ended (and, stopped, its
# files are saved): the state is set in the workflow task that starts the workspace's
# clean-up and gives the machine back, not in the one after them.
FINAL_BEFORE_CLEANUP_PATCH = "run-final-before-cleanup"


class _Interrupted(Exception):
    pass


class _Withdrawn(Exception):
    pass


class _Halted(Exception):
    """A stop or kill arrived while a step before Running was under way."""


@workflow.defn
class RunWorkflow(RunInbox):
    """Signals `lease_granted`, `lease_failed`, `machine_lost`, `stop`, `kill`: RunInbox."""

    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        super().__init__()
        self.inp = inp
        self.run_status = RunStatus(
            run_id=inp.run_id,
            state=RunState.REQUESTED,
            spec=inp.spec,
            timeline=[StateChange(state=RunState.REQUESTED, at=workflow.now())],
        )
        self._push: workflow.ActivityHandle[PushResult] | None = None
        self.halt_acted = False  # a stop/kill reached the run before its command ended
        self._released = False  # this attempt's machine went back to the pool already
        self._finished = False  # the final state is set (maybe before the clean-up)
        # What the run notes about an attempt before its final state (auto-resume's record
        # of it); set per attempt by _run, called once (True: called).
        self._before_final: Callable[[RunState, str], None] | None = None
        self._attempt_noted = False
        self.run_status.stop_conditions = [c.describe() for c in inp.stop_conditions]

    # --- messages -------------------------------------------------------------------

    @workflow.query
    def status(self) -> RunStatus:
        return self.run_status

    @workflow.update
    async def final_status(self) -> RunStatus:
        """The status once the state is final (`conjure stop/kill --wait`): it answers in
        the workflow task that sets it, with no polling; at once for a final run."""
        await workflow.wait_condition(lambda: self.run_status.state.final)
        return self.run_status

    # --- the run --------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RunInput) -> RunStatus:
        child = None
        if inp.stop_conditions:
            child = await workflow.start_child_workflow(
                StopConditionWorkflow.run,
                StopConditionInput(run_id=inp.run_id, conditions=inp.stop_conditions),
                id=child_workflow_id(inp.run_id),
            )
        try:
            status = await self._run(inp)
            if inp.spec.secrets_key and workflow.patched("forget-secrets"):
                await self._forget_secrets(inp.spec.secrets_key)
        finally:
            if child is not None and not child.done():
                try:
                    await child.signal(StopConditionWorkflow.close)
                except Exception:
                    pass  # it finished meanwhile
        if status.state != RunState.COMPLETE and workflow.patched(run_outcome.FAIL_PATCH):
            # The Web UI's list shows FAILED, not COMPLETED; the status is the failure's detail.
            raise run_outcome.failure(status)
        return status

    async def _forget_secrets(self, key: str) -> None:
        """The run is final: its secret values leave the store (on the control worker)."""
        try:
            await workflow.execute_activity_method(
                SecretActivityDefs.forget_secrets,
                ForgetSecretsInput(key=key),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except ActivityError:
            pass  # the values stay; the run's result does not depend on it

    async def _run(self, inp: RunInput) -> RunStatus:
        pool = workflow.get_external_workflow_handle(inp.pool_workflow_id)
        # --auto-resume: an Interrupted attempt is followed by another on a new machine.
        resumable = inp.spec.auto_resume > 1 and workflow.patched("run-auto-resume")
        attempt = 1
        while True:
            machine_type = inp.spec.machine_type
            fallback = inp.spec.spot_fallback
            if resumable and machine_type.spot and fallback and attempt > fallback:
                machine_type = machine_type.model_copy(update={"spot": False})
            await pool.signal(
                PoolWorkflow.request_lease,
                LeaseRequest(
                    run_workflow_id=workflow.info().workflow_id,
                    run_id=inp.run_id,
                    machine_type=machine_type,
                    image_hint=inp.spec.environment.tag
                    or inp.spec.environment.docker_image
                    or None,
                ),
            )
            await workflow.wait_condition(
                lambda: (
                    self.lease is not None
                    or self.lease_error is not None
                    or self.stop_requested
                    or self.kill_requested
                )
            )
            if self.lease is None:
                await pool.signal(
                    PoolWorkflow.cancel_lease,
                    CancelLeaseRequest(run_workflow_id=workflow.info().workflow_id),
                )
                if self.lease_error is not None:
                    return self._finish(RunState.FAILED, self.lease_error)
                final = RunState.KILLED if self.kill_requested else RunState.STOPPED
                self._note_halt()
                return self._finish(final, "withdrawn before a machine was assigned")

            lease = self.lease
            self._released = False
            self._attempt_noted = False
            if resumable:
                self._before_final = self._attempt_noter(attempt, lease, machine_type)
            self.run_status.machine_id = lease.machine_id
            self.run_status.reused_machine = lease.reused
            self._cost_mark(leased=True)
            healthy = True
            try:
                final, reason = await self._on_machine(lease, restore=attempt > 1)
            except _Interrupted as e:
                healthy = False
                final, reason = RunState.INTERRUPTED, str(e)
            finally:
                if not self._released:
                    await self._release(healthy)
            if resumable:
                if not self._attempt_noted:
                    self._note_attempt(attempt, lease, machine_type, final, reason)
                if (
                    final == RunState.INTERRUPTED
                    and attempt < inp.spec.auto_resume
                    and not self._halted()
                ):
                    attempt += 1
                    self.lease, self.lost, self._push = None, None, None
                    self._set_state(
                        RunState.REQUESTED,
                        f"attempt {attempt} of {inp.spec.auto_resume}, after: {reason}",
                    )
                    continue
                if final == RunState.INTERRUPTED:
                    reason += f" (attempt {attempt} of {inp.spec.auto_resume}: no more attempts)"
            return self._finish(final, reason)

    def _attempt_noter(
        self, attempt: int, lease: Lease, machine_type: MachineType
    ) -> Callable[[RunState, str], None]:
        def note(final: RunState, reason: str) -> None:
            self._attempt_noted = True
            self._note_attempt(attempt, lease, machine_type, final, reason)

        return note

    async def _release(self, healthy: bool, *, marked: bool = False) -> None:
        """Give this attempt's machine back to the pool (once). marked: its time on the
        machine was ended already (_halted_end)."""
        assert self.lease is not None
        self._released = True
        await workflow.get_external_workflow_handle(self.inp.pool_workflow_id).signal(
            PoolWorkflow.release,
            ReleaseRequest(
                machine_id=self.lease.machine_id,
                run_workflow_id=workflow.info().workflow_id,
                healthy=healthy,
                image=self.run_status.image,
            ),
        )
        if not marked:
            self._cost_mark(leased=False)

    async def _cleanup_and_release(self, run_id: int, *, marked: bool = False) -> None:
        """The last steps on the machine once its outcome is known: the workspace is
        cleaned (only this run's container, volumes and folder) while the machine is
        already given back, in one workflow task instead of two. A cleanup error still
        fails the run, as before."""
        if not workflow.patched(RELEASE_WITH_CLEANUP_PATCH):
            await self._cleanup(run_id)
            return
        results = await asyncio.gather(
            self._cleanup(run_id),
            self._release(healthy=True, marked=marked),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def _note_attempt(
        self, attempt: int, lease: Lease, machine_type: MachineType, final: RunState, reason: str
    ) -> None:
        st = self.run_status
        st.attempts.append(
            RunAttempt(
                attempt=attempt,
                machine_id=lease.machine_id,
                machine_type=machine_type.name,
                spot=lease.spot,  # the machine's, not the request's: spot only if it was
                started=st.leased_at,
                ended=st.released_at,
                state=final.value,
                reason=reason,
                cost=cost.cost(machine_type.price_per_hour, st.leased_at, st.released_at),
            )
        )

    def _cost_mark(self, leased: bool) -> None:
        """Time on the machine, its cost, and the memo `conjure ls` reads them from."""
        now = workflow.now()
        if leased:
            self.run_status.leased_at = now
        else:
            self.run_status.released_at = now
        price = self.inp.spec.machine_type.price_per_hour
        earlier = sum(a.cost for a in self.run_status.attempts)  # earlier attempts' machines
        self.run_status.cost = earlier + cost.cost(
            price, self.run_status.leased_at, self.run_status.released_at
        )
        if workflow.patched("run-cost-memo"):
            workflow.upsert_memo(
                cost.memo(
                    price, self.run_status.leased_at, self.run_status.released_at, earlier=earlier
                )
            )

    async def _on_machine(self, lease: Lease, restore: bool = False) -> tuple[RunState, str]:
        spec = self.inp.spec
        opts = self.inp.options
        run_id = self.inp.run_id
        try:
            self._set_state(RunState.BUILDING)
            try:
                prepared = await self._step(
                    Machine.prepare_workspace,
                    PrepareInput(
                        run_id=run_id, code=spec.code, mounts=spec.mounts, restore=restore
                    ),
                    first=True,
                    haltable=True,
                )
            except _Halted:
                return await self._halt_before_running(None)
            try:
                env = await self._step(
                    Machine.ensure_environment,
                    EnvInput(
                        run_id=run_id,
                        base_image=opts.base_image,
                        spec=spec.environment,
                        registry=opts.registry,
                    ),
                    timeout=timedelta(hours=2),
                    haltable=True,
                )
            except _Halted:
                return await self._halt_before_running(prepared)
            self.run_status.image = env.image
            self.run_status.image_cached = env.cached
            self.run_status.image_source = env.source
            if env.push:  # started now, awaited in Pushing
                self._push = self._start_push(env.image)
            if self._halted():
                return await self._halt_before_running(prepared)

            self._set_state(RunState.MOUNTING)
            mounted = MountResult()
            if spec.mounts:
                try:
                    mounted = await self._step(
                        Machine.mount_resources,
                        MountInput(run_id=run_id, mounts=spec.mounts),
                        timeout=timedelta(hours=6),
                        haltable=True,
                    )
                except _Halted:
                    return await self._halt_before_running(prepared)
            self.run_status.mounts_cached = mounted.cached
            if self._halted():
                return await self._halt_before_running(prepared)

            self._set_state(RunState.RUNNING)
            result = await self._execute(
                ExecuteInput(
                    run_id=run_id,
                    image=env.image,
                    spec=spec,
                    options=opts,
                    prepared=prepared,
                    binds=mounted.binds,
                    metrics_workflow_id=child_workflow_id(run_id)
                    if self.inp.stop_conditions
                    else "",
                    watch_metrics=watched_names(self.inp.stop_conditions),
                )
            )
            self.run_status.exit_code = result.exit_code
            if self.kill_requested and self.halt_acted:
                return await self._halted_end(RunState.KILLED, self._note_halt(killed=True))

            await self._save(prepared)
            self._set_state(RunState.PUSHING)
            await self._await_push()
            if self.halt_acted:
                return await self._halted_end(RunState.STOPPED, self._note_halt(killed=False))
            await self._cleanup_and_release(run_id)
            if result.exit_code == 0:
                return RunState.COMPLETE, ""
            return RunState.FAILED, self._explain_exit(result)
        except ActivityError as e:
            if _is_machine_gone(e):
                raise _Interrupted(f"the machine stopped answering: {_cause(e)}") from None
            self.run_status.log_tail = _log_tail(e)
            reason = f"{self.run_status.state.value} failed: {_cause(e)}"
            if workflow.patched("cleanup-after-failed-step"):
                # Every path out of a leased machine leaves it clean (workspace, container).
                try:
                    await self._cleanup(run_id)
                except ActivityError:
                    pass  # the machine goes back to the pool all the same
            return RunState.FAILED, reason

    async def _step(
        self,
        activity: Callable[[Any, I], R],
        arg: I,
        *,
        first: bool = False,
        timeout: timedelta = timedelta(minutes=30),
        haltable: bool = False,
    ) -> R:
        """Run a machine-local step. A haltable step is abandoned (and cancelled) as
        soon as a stop or kill arrives: raises _Halted."""
        assert self.lease is not None
        handle = workflow.start_activity_method(
            activity,
            arg,
            task_queue=self.lease.task_queue,
            schedule_to_start_timeout=PICKUP_TIMEOUT,
            start_to_close_timeout=timeout,
            heartbeat_timeout=timedelta(seconds=60) if timeout > timedelta(minutes=5) else None,
            retry_policy=STEP_RETRY,
        )
        if haltable:
            await workflow.wait_condition(
                lambda: handle.done() or self._halted() or self.lost is not None
            )
            if not handle.done():
                handle.cancel()
                if self.lost is not None:
                    raise _Interrupted(self.lost)
                raise _Halted()
        return await handle

    async def _execute(self, inp: ExecuteInput) -> ExecuteResult:
        assert self.lease is not None
        heartbeat = timedelta(seconds=self.inp.options.execute_heartbeat_seconds)
        if not workflow.patched("execute-reattach"):
            handle = workflow.start_activity_method(
                Machine.execute,
                inp,
                task_queue=self.lease.task_queue,
                # A retry (agent restarted) must be picked up within 3/4 of the heartbeat
                # timeout, or the machine is judged gone.
                schedule_to_start_timeout=max(heartbeat * 0.75, timedelta(seconds=1)),
                start_to_close_timeout=timedelta(days=30),
                heartbeat_timeout=heartbeat,
                retry_policy=RetryPolicy(
                    maximum_attempts=10, initial_interval=timedelta(seconds=1)
                ),
            )
            return await self._follow_execute(inp, handle, set())
        # The workflow retries execute itself. A server-side retry after a heartbeat
        # timeout can be handed to a poll the lost machine left open (an SSH tunnel
        # keeps its connection to Temporal until keepalive gives up): that attempt
        # "starts", and waits out a whole heartbeat timeout more. Here, an attempt whose
        # heartbeat timed out is followed by one re-attach (the same container, logs from
        # the store) that must be picked up and heartbeat within half the heartbeat
        # timeout; one that never heartbeated means the machine is gone. So a dead machine
        # makes the run Interrupted within 1.5x the heartbeat timeout (plus latencies),
        # and an agent restarted in time carries the run on.
        attempt, timeout, pickup = inp, heartbeat, heartbeat * 0.75
        signalled: set[str] = set()  # stop/kill already passed on, whichever attempt
        for n in range(1, EXECUTE_ATTEMPTS + 1):
            handle = workflow.start_activity_method(
                Machine.execute,
                attempt,
                task_queue=self.lease.task_queue,
                schedule_to_start_timeout=max(pickup, timedelta(seconds=1)),
                start_to_close_timeout=timedelta(days=30),
                heartbeat_timeout=max(timeout, timedelta(seconds=1)),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
            try:
                return await self._follow_execute(inp, handle, signalled)
            except ActivityError as e:
                if n == EXECUTE_ATTEMPTS or not _reattachable(e, first=n == 1):
                    raise
                # An agent that said it is restarting gets the whole heartbeat timeout
                # to be back; a silent one half of it.
                shutdown = isinstance(e.cause, ApplicationError)
                pickup = heartbeat if shutdown else heartbeat / 2
            attempt = inp.model_copy(update={"resume": True})
            timeout = heartbeat / 2
        raise AssertionError("unreachable")

    async def _follow_execute(
        self,
        inp: ExecuteInput,
        handle: workflow.ActivityHandle[ExecuteResult],
        signalled: set[str],
    ) -> ExecuteResult:
        """Await an execute attempt, passing stop and kill on to its container."""
        assert self.lease is not None
        while True:
            await workflow.wait_condition(
                lambda: (
                    handle.done()
                    or (self.kill_requested and "kill" not in signalled)
                    or (self.stop_requested and "stop" not in signalled)
                    or self.lost is not None
                )
            )
            if handle.done():
                return await handle
            if self.lost is not None:
                handle.cancel()
                raise _Interrupted(self.lost)
            kind = "kill" if self.kill_requested and "kill" not in signalled else "stop"
            signalled.add(kind)
            self.halt_acted = True
            grace = self.inp.options.stop_grace_seconds
            if kind == "stop" and self.stop_request and self.stop_request.grace_seconds is not None:
                grace = self.stop_request.grace_seconds
            # Not awaited: a kill must not wait for a stop's grace period to run out.
            workflow.start_activity_method(
                Machine.signal_container,
                SignalContainerInput(run_id=inp.run_id, kind=kind, grace=grace),
                task_queue=self.lease.task_queue,
                schedule_to_start_timeout=PICKUP_TIMEOUT,
                start_to_close_timeout=timedelta(seconds=grace + 60),
                retry_policy=STEP_RETRY,
            )

    async def _save(self, prepared: PrepareResult) -> None:
        self._set_state(RunState.SAVING)
        saved = await self._step(
            Machine.save_outputs,
            SaveInput(
                run_id=self.inp.run_id,
                workdir=prepared.workdir,
                exclude=[m.dest for m in self.inp.spec.mounts],
            ),
            timeout=timedelta(hours=6),
        )
        self.run_status.outputs = saved.files
        self.run_status.output_bytes = saved.bytes

    def _start_push(self, image: str) -> workflow.ActivityHandle[PushResult]:
        assert self.lease is not None
        return workflow.start_activity_method(
            Machine.push_environment,
            PushInput(run_id=self.inp.run_id, image=image),
            task_queue=self.lease.task_queue,
            schedule_to_start_timeout=PICKUP_TIMEOUT,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=STEP_RETRY,
        )

    async def _await_push(self) -> None:
        if self._push is None:
            return
        try:
            pushed = await self._push
            self.run_status.image_pushed = pushed.pushed
        except ActivityError:
            self.run_status.image_pushed = False

    async def _halt_before_running(self, prepared: PrepareResult | None) -> tuple[RunState, str]:
        self.halt_acted = True
        where = self.run_status.state.value
        final = RunState.KILLED if self.kill_requested else RunState.STOPPED
        if workflow.patched(FINAL_BEFORE_CLEANUP_PATCH):
            reason = f"{self._note_halt(killed=final == RunState.KILLED)} in {where}"
            return await self._halted_end(final, reason)
        await self._cleanup(self.inp.run_id)
        if self.kill_requested:
            return RunState.KILLED, f"{self._note_halt(killed=True)} in {where}"
        return RunState.STOPPED, f"{self._note_halt(killed=False)} in {where}"

    async def _halted_end(self, final: RunState, reason: str) -> tuple[RunState, str]:
        """A stopped or killed run's last steps on its machine: killed, its container has
        ended; stopped, its files are saved too. So it is final now, and its workspace is
        cleaned and its machine given back after (in the same workflow task). A clean-up
        that fails then leaves the final state as it is: the run's outcome was decided."""
        if not workflow.patched(FINAL_BEFORE_CLEANUP_PATCH):
            await self._cleanup_and_release(self.inp.run_id)
            return final, reason
        # Everything the final status says is set first: the machine's time (and cost)
        # ends now, as it is given back below; an auto-resumed run's attempt is noted.
        self._cost_mark(leased=False)
        if self._before_final is not None:
            self._before_final(final, reason)
        self._finish(final, reason)
        try:
            await self._cleanup_and_release(self.inp.run_id, marked=True)
        except ActivityError as e:
            workflow.logger.warning("run %s: the clean-up after it ended failed: %s",
                                    self.inp.run_id, _cause(e))  # fmt: skip
        return final, reason

    def _note_halt(self, killed: bool | None = None) -> str:
        """Who stopped or killed the run, kept in the status; returns the final reason."""
        if self.kill_requested if killed is None else killed:
            req = self.kill_request or StopRequest(source="cli")
            self.run_status.stopped_by = req.reason or "`conjure kill`"
            return req.reason or "killed by `conjure kill`"
        req = self.stop_request or StopRequest(source="cli")
        self.run_status.stopped_by = req.reason or "`conjure stop`"
        return req.reason or "stopped by `conjure stop`"

    async def _cleanup(self, run_id: int) -> None:
        await self._step(Machine.cleanup_workspace, CleanupInput(run_id=run_id))

    # --- state ----------------------------------------------------------------------

    def _halted(self) -> bool:
        return self.stop_requested or self.kill_requested

    def _set_state(self, state: RunState, detail: str = "") -> None:
        self.run_status.state = state
        self.run_status.timeline.append(StateChange(state=state, at=workflow.now(), detail=detail))
        workflow.upsert_search_attributes([keys.STATE.value_set(state.value)])

    def _finish(self, state: RunState, reason: str) -> RunStatus:
        if self._finished:  # set before the clean-up already (FINAL_BEFORE_CLEANUP_PATCH)
            return self.run_status
        self._finished = True
        self.run_status.reason = reason
        if self.run_status.exit_code is not None and workflow.patched("run-exit-code-memo"):
            workflow.upsert_memo({keys.EXIT_CODE_MEMO: self.run_status.exit_code})
        self._set_state(state, reason)
        return self.run_status

    @staticmethod
    def _explain_exit(result: ExecuteResult) -> str:
        code = result.exit_code
        if result.oom_killed or code in (137, 143):
            return (
                f"exit code {code}: the command was most likely killed by the kernel for running "
                "out of memory or disk; choose a bigger machine type with --machine-type "
                "(see `conjure machine-types`)"
            )
        return f"exit code {code}"


def _cause(e: BaseException) -> str:
    while isinstance(e, ActivityError) and e.cause is not None:
        e = e.cause
    if isinstance(e, ApplicationError):
        return e.message
    return str(e)


def _log_tail(e: BaseException) -> list[str]:
    """The failed step's log tail, when its error carries one (a failed build)."""
    while isinstance(e, ActivityError) and e.cause is not None:
        e = e.cause
    if isinstance(e, ApplicationError):
        for d in e.details:
            if isinstance(d, dict) and isinstance(d.get("log_tail"), list):
                return [str(x) for x in d["log_tail"]]
    return []


def _reattachable(e: ActivityError, *, first: bool) -> bool:
    """An execute attempt worth following with a re-attach: the agent said it is
    restarting, or its heartbeat stopped after the machine had shown it was alive (the
    first attempt, or a re-attach that heartbeated at least once)."""
    cause = e.cause
    if isinstance(cause, ApplicationError):
        return cause.type == "AgentShutdown"
    return (
        isinstance(cause, TimeoutError)
        and cause.type == TimeoutType.HEARTBEAT
        and (first or bool(cause.last_heartbeat_details))
    )


def _is_machine_gone(e: ActivityError) -> bool:
    cause = e.cause
    return isinstance(cause, TimeoutError) and cause.type in (
        TimeoutType.SCHEDULE_TO_START,
        TimeoutType.HEARTBEAT,
    )
