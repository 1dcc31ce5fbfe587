"""Run handles: start a run workflow, find runs, and `AsyncRun`, a handle on one run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from conjure.cli.client import Connection
from conjure.cli.code import run_diff
from conjure.cli.liveness import query_with_liveness
from conjure.cli.pool import ensure_pool
from conjure.cli.recorded import recorded_status
from conjure.infra.counters import allocate
from conjure.infra.errors import ConflictError, NotFoundError, RunFailedError, UsageError
from conjure.infra.logs import LogLine, LogReader
from conjure.infra.metrics import Point, read_metrics
from conjure.infra.store import Entry, StoreError
from conjure.workflows import keys
from conjure.workflows.models import RunInput, RunOptions, RunSpec, RunState, RunStatus
from conjure.workflows.pool_shards import pool_for_run
from conjure.workflows.run import RunWorkflow
from conjure.workflows.run_outcome import shown_state, status_of
from conjure.workflows.stop_conditions import StopCondition, StopRequest

# Reading a run's history needs no worker, only the server: a loaded server gets longer.
HISTORY_DEADLINE = timedelta(seconds=5)


class AsyncRun:
    """A handle on one run."""

    def __init__(self, conn: Connection, run_id: int) -> None:
        self._c = conn
        self.id = run_id

    @property
    def workflow_id(self) -> str:
        return keys.run_workflow_id(self.id)

    async def _handle(self) -> WorkflowHandle[Any, Any]:
        return (await self._c.client()).get_workflow_handle(self.workflow_id)

    async def status(self) -> RunStatus:
        handle = await self._handle()
        client = await self._c.client()

        async def from_history(why: str) -> tuple[RunStatus, bool]:
            st = await recorded_status(client, handle, HISTORY_DEADLINE, why)
            return st, not st.stale

        async def query() -> RunStatus:
            return await query_with_liveness(
                client,
                self._c.settings.control_task_queue,
                lambda timeout: handle.query(RunWorkflow.status, rpc_timeout=timeout),
                from_history,
            )

        try:
            st = await query()
            # Its workflow may have been terminated from outside (a stale answer from
            # history already says whether it closed).
            if not st.state.final and not st.stale:
                closed = (await handle.describe()).status
                if closed is not None and closed != WorkflowExecutionStatus.RUNNING:
                    # Or it ended on its own between the query and the describe: the
                    # closed workflow's own answer says which.
                    st = await query()
                if (
                    not st.state.final
                    and closed is not None
                    and closed != WorkflowExecutionStatus.RUNNING
                ):
                    st.reason = (
                        f"its workflow was {closed.name.lower().replace('_', ' ')} "
                        f"(Temporal Web UI or CLI) while it was {st.state.value}"
                    )
                    st.state = RunState(shown_state(st.state.value, closed.name))
            return st
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"run {self.id} does not exist") from None
            raise

    async def wait(
        self, poll: float = 0.5, *, check: bool = False, state: RunState | str | None = None
    ) -> RunStatus:
        """The run's final status (Spell's `run.wait()`); with `state`, wait only until
        the run reaches that state (`wait_status`); with `check`, a run that ends other
        than Complete raises RunFailedError (its final status in `.status`)."""
        if state is not None:
            return await self.wait_status(state, poll=poll)
        client = await self._c.client()
        handle = client.get_workflow_handle(self.workflow_id, result_type=RunStatus)
        try:
            st = await handle.result()
        except WorkflowFailureError as e:
            # Runs that end other than Complete fail their workflow (workflows/run_outcome.py).
            st = status_of(e) or await self.status()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise NotFoundError(f"run {self.id} does not exist") from None
            raise
        if check and st.state != RunState.COMPLETE:
            reason = f": {st.reason}" if st.reason else ""
            raise RunFailedError(f"run {self.id} {st.state.value}{reason}", st)
        return st

    async def wait_final(self, poll: float = 0.1) -> RunStatus:
        """The status as soon as the run's state is final, before its machine's clean-up
        has run (`conjure stop/kill --wait`; `wait()` returns once the workflow has
        closed). One update that the workflow answers when it sets the state; where that
        cannot be had (a worker older than the update, a closed or terminated workflow),
        the status is read every `poll` seconds."""
        handle = await self._handle()
        try:
            st = await handle.execute_update(RunWorkflow.final_status)
            if st.state.final:
                return st
        except (RPCError, WorkflowUpdateFailedError):
            pass  # closed, or its worker knows no such update: the status says
        while True:
            st = await self.status()
            if st.state.final:
                return st
            await asyncio.sleep(poll)

    async def wait_status(self, *states: RunState | str, poll: float = 0.5) -> RunStatus:
        """Wait until the run is in (or has passed through) one of `states`, e.g.
        `await run.wait_status(RunState.RUNNING)`; a run that ends without reaching
        any of them raises RunFailedError."""
        wanted = {RunState(s) for s in states}
        if not wanted:
            raise UsageError("wait_status: name at least one state")
        while True:
            st = await self.status()
            if st.state in wanted or any(ch.state in wanted for ch in st.timeline):
                return st
            if st.state.final:
                names = ", ".join(sorted(s.value for s in wanted))
                raise RunFailedError(
                    f"run {self.id} ended {st.state.value} without reaching {names}", st
                )
            await asyncio.sleep(poll)

    async def stop(
        self, grace_seconds: float | None = None, *, source: str = "cli", reason: str = ""
    ) -> RunStatus:
        """Graceful: SIGTERM, SIGKILL after the grace period; the run still saves.
        reason: what the run's status says stopped it (default: `conjure stop`)."""
        req = StopRequest(grace_seconds=grace_seconds, source=source, reason=reason)
        return await self._signal("stop", req)

    async def kill(self, *, source: str = "cli", reason: str = "") -> RunStatus:
        """At once: SIGKILL, nothing saved, the machine released."""
        return await self._signal("kill", StopRequest(source=source, reason=reason))

    async def _signal(self, name: str, req: StopRequest) -> RunStatus:
        """Signal the run's workflow (from any machine that reaches the server);
        returns the status it had. A finished run is a ConflictError."""
        handle = await self._handle()

        async def send() -> bool:
            try:
                await handle.signal(name, req)
                return True
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise
                return False  # no such run, or it has finished

        # The signal and the status query at once: a kill waits for one round trip.
        st, sent = await asyncio.gather(self.status(), send())
        if not sent:
            if not st.state.final:
                st = await self.status()  # it finished between the query and the signal
            raise ConflictError(f"run {self.id} is already {st.state.value}")
        return st

    def metric_series(self) -> dict[str, list[Point]]:
        """Every metric the run logged (its own and the hardware's), by name, in order."""
        return read_metrics(self._c.store, self.id)

    async def logs(
        self,
        follow: bool = False,
        poll: float = 0.1,
        status_every: float = 1.0,
        *,
        program_only: bool = False,
    ) -> AsyncIterator[LogLine]:
        """The run's log; with follow, new lines as they are stored until the run ends
        (the store is read every `poll` seconds, the run's state every `status_every`).
        With program_only, only the program's own lines (not the build's, the push's or
        Conjure's notes)."""
        await self.status()  # unknown run: a clear error
        reader = LogReader(self._c.store, self.id)
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            if follow:
                reader.follow()  # the run's writer flushes at its fastest
            for line in reader.poll():
                if not program_only or (line.phase == "run" and line.stream != "c"):
                    yield line
            if not follow:
                return
            if loop.time() - checked >= status_every:
                checked = loop.time()
                st = await self.status()
                if st.state.final:
                    for line in reader.poll():
                        if not program_only or (line.phase == "run" and line.stream != "c"):
                            yield line
                    return
            await asyncio.sleep(poll)

    async def diff(self) -> bytes | None:
        """The uncommitted changes the run was submitted with (a patch `git apply`
        takes), or None when its code was a clean commit."""
        return run_diff(self._c.store, (await self.status()).spec.code)

    def log_page(
        self, after: str = "", max_chunks: int = 200, follow: bool = False
    ) -> tuple[list[LogLine], str, bool]:
        """The log's lines after the cursor `after` ('': from the start), at most
        max_chunks chunks of them; the cursor to continue from; whether more follow.
        follow: someone watches the live run (its log is flushed at its fastest)."""
        reader = LogReader(self._c.store, self.id, after=after)
        if follow:
            reader.follow()
        lines = list(reader.poll(max_chunks=max_chunks))
        return lines, reader.cursor, reader.left > 0

    def log_reader(self) -> LogReader:
        """Reads the run's log from where the last poll() stopped."""
        return LogReader(self._c.store, self.id)

    def outputs(self) -> list[Entry]:
        try:
            return list(self._c.store.walk(f"runs/{self.id}"))
        except StoreError:
            return []

    def metrics(self) -> list[dict[str, Any]]:
        """The run's metrics as `{name, value, step, t}` (t: seconds since the epoch), in
        the order they were logged; [] if none. `metric_series()` groups them by name."""
        points = [p for pts in read_metrics(self._c.store, self.id).values() for p in pts]
        points.sort(key=lambda p: (p.t, p.name, p.index))
        return [{"name": p.name, "value": p.value, "step": p.step, "t": p.t / 1e9} for p in points]


async def allocate_run_id(conn: Connection, request_id: str) -> int:
    result = await allocate(
        await conn.client(),
        keys.COUNTER_WORKFLOW_ID,
        conn.settings.control_task_queue,
        request_id,
    )
    return result.run_id


async def start_run(
    conn: Connection,
    spec: RunSpec,
    options: RunOptions | None = None,
    stop_conditions: Sequence[StopCondition] = (),
) -> AsyncRun:
    """Allocate the run's id and start its workflow; a retried request is the same run."""
    client = await conn.client()
    # Two round trips at once: the pool exists (and has this client's settings)
    # before the run is started, the run id comes from the counter.
    _, run_id = await asyncio.gather(ensure_pool(conn), allocate_run_id(conn, spec.request_id))
    try:
        await client.start_workflow(
            RunWorkflow.run,
            RunInput(
                run_id=run_id,
                spec=spec,
                options=options or RunOptions(),
                pool_workflow_id=pool_for_run(
                    run_id,
                    spec.machine_type.name,
                    conn.settings.pool_shards,
                    conn.settings.pool_shard_key,
                ),
                stop_conditions=list(stop_conditions),
            ),
            id=keys.run_workflow_id(run_id),
            task_queue=conn.settings.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=keys.run_search_attributes(run_id, spec),
        )
    except WorkflowAlreadyStartedError:
        pass  # a retried submission whose run already finished: same run, not a second one
    return AsyncRun(conn, run_id)


async def get_run(conn: Connection, run_id: int) -> AsyncRun:
    """A handle on an existing run; NotFoundError otherwise."""
    run = AsyncRun(conn, run_id)
    await run.status()
    return run
