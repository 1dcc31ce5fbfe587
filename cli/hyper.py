"""Hyperparameter searches from Python: many runs of one command, ranked by a metric.

    from conjure import Conjure

    c = Conjure()
    h = c.hyper_grid("python train.py --rate :rate: --layers :layers:",
                     params={"rate": [0.001, 0.01, 0.1], "layers": [2, 3]},
                     metric="val_acc", metric_agg="max")
    st = h.wait()
    print(st.best.params, st.best.value)

    h = c.hyper_random("python train.py --rate :rate:", params={"rate": "0.0001:0.1:log"},
                       num_runs=20, parallel=4, metric="val_acc")

`params` is a mapping name -> list of values or a range text `MIN:MAX[:SCALE[:TYPE]]`,
or the CLI's `NAME=...` texts. The search runs as the workflow `hyper-<H>`
(workflows/hyper.py); every run of it is an ordinary run.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from conjure.infra.counters import allocate
from conjure.infra.errors import ConjureError, UsageError
from conjure.infra.metrics import read_metrics
from conjure.workflows import keys
from conjure.workflows.hyper import HyperWorkflow
from conjure.workflows.hyper_models import (
    AGGS,
    HyperInput,
    HyperParam,
    HyperState,
    HyperStatus,
    aggregate,
    check_search,
    default_goal,
    parse_param,
)
from conjure.workflows.models import RunState

Params = Mapping[str, Any] | Sequence[str]


def parse_params(params: Params) -> list[HyperParam]:
    """`{"rate": [0.1, 0.2], "lr": "0.001:1:log"}` or `["rate=0.1,0.2"]` -> HyperParams."""
    texts: list[str] = []
    if isinstance(params, Mapping):
        for name, spec in params.items():
            if isinstance(spec, str):
                texts.append(f"{name}={spec}")
            elif isinstance(spec, Sequence):
                texts.append(f"{name}={','.join(str(v) for v in spec)}")
            else:
                raise UsageError(f"--param {name}: give a list of values or MIN:MAX[:SCALE]")
    else:
        texts = [str(t) for t in params]
    out = []
    for text in texts:
        try:
            out.append(parse_param(text))
        except ValueError as e:
            raise UsageError(f"--param: {e}") from None
    return out


def check_options(
    kind: str,
    command: str,
    params: list[HyperParam],
    *,
    num_runs: int,
    parallel: int,
    metric: str,
    metric_agg: str,
    goal: str | None,
) -> str:
    """Validate everything about a search but its run flags; returns the goal."""
    try:
        check_search(kind, command, params, num_runs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if metric_agg not in AGGS:
        raise UsageError(f"--metric-agg: {metric_agg!r} is not one of {', '.join(AGGS)}")
    goal = goal or default_goal(metric_agg)
    if goal not in ("max", "min"):
        raise UsageError(f"--goal: {goal!r} is not max or min")
    if parallel < 0:
        raise UsageError("--parallel: must be 0 (no limit of its own) or more")
    if metric and any(ch.isspace() for ch in metric):
        raise UsageError(f"--metric: {metric!r} is not a metric name")
    if kind == "bayes" and not metric:
        raise UsageError("a bayes search needs --metric: its results choose the next values")
    return goal


class AsyncHyper:
    def __init__(self, conjure: Any, hyper_id: int) -> None:
        self._c = conjure
        self.id = hyper_id

    @property
    def workflow_id(self) -> str:
        return keys.hyper_workflow_id(self.id)

    async def _handle(self) -> Any:
        return (await self._c.client()).get_workflow_handle(self.workflow_id)

    async def status(self, live: bool = True) -> HyperStatus:
        """The search's status; with live, runs under way show their current state and
        their metric so far (read from the store, as `conjure status` would)."""
        try:
            st: HyperStatus = await (await self._handle()).query(HyperWorkflow.status)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise ConjureError(f"hyperparameter search {self.id} does not exist") from None
            raise
        if live:
            await self._fill_live(st)
        return st

    async def _fill_live(self, st: HyperStatus) -> None:
        from conjure.cli.runs import AsyncRun

        for r in st.runs:
            if r.run_id is None or r.done:
                continue
            try:
                r.state = (await AsyncRun(self._c, r.run_id).status()).state.value
            except (ConjureError, RPCError):
                pass
            if st.metric:
                pts = read_metrics(self._c.store, r.run_id).get(st.metric, [])
                r.value, r.points = aggregate((p.value for p in pts), st.metric_agg), len(pts)

    async def wait(self) -> HyperStatus:
        await self.status(live=False)
        client = await self._c.client()
        handle = client.get_workflow_handle(self.workflow_id, result_type=HyperStatus)
        return await handle.result()

    async def stop(self) -> HyperStatus:
        st = await self.status(live=False)
        if st.state != HyperState.RUNNING:
            raise ConjureError(f"hyperparameter search {self.id} is already {st.state.value}")
        await (await self._handle()).signal(HyperWorkflow.stop)
        return st


class Hyper:
    """Synchronous handle on a hyperparameter search (see AsyncHyper)."""

    def __init__(self, conjure: Any, inner: AsyncHyper) -> None:
        self._c = conjure
        self._inner = inner
        self.id = inner.id

    def status(self) -> HyperStatus:
        return self._c._sync(self._inner.status())

    def wait(self) -> HyperStatus:
        return self._c._sync(self._inner.wait())

    def stop(self) -> HyperStatus:
        return self._c._sync(self._inner.stop())


async def start_hyper(
    c: Any,
    kind: str,
    command: str,
    params: Params,
    *,
    num_runs: int = 0,
    parallel: int | None = None,
    metric: str = "",
    metric_agg: str = "last",
    goal: str | None = None,
    stop_conditions: Sequence[str] = (),
    seed: int | None = None,
    **run_kwargs: Any,
) -> AsyncHyper:
    """Validate, package the code once, start `hyper-<H>`. run_kwargs: what `run()` takes
    (machine_type, mounts, env, pip, ...). parallel None: the pool's max_concurrent_runs."""
    from conjure.cli.specs import parse_stop_conditions

    hp = parse_params(params)
    if parallel is None:
        parallel = max(c.settings.max_concurrent_runs, 0)
    goal = check_options(
        kind, command, hp, num_runs=num_runs, parallel=parallel, metric=metric,
        metric_agg=metric_agg, goal=goal,
    )  # fmt: skip
    conditions = parse_stop_conditions(stop_conditions)
    code_dir = run_kwargs.pop("code_dir", None)
    if code_dir is not None:  # as run() takes it: the directory whose code the runs get
        run_kwargs["cwd"] = Path(code_dir).expanduser()
        if not run_kwargs["cwd"].is_dir():
            raise UsageError(f"code_dir {code_dir}: no such directory")
    request_id = uuid.uuid4().hex
    spec = await c.build_spec(command, request_id=request_id, **run_kwargs)
    client = await c.client()
    await c.ensure_pool()
    hid = (
        await allocate(
            client, keys.HYPER_COUNTER_WORKFLOW_ID, c.settings.control_task_queue, request_id
        )
    ).run_id
    inp = HyperInput(
        hyper_id=hid,
        kind=kind,
        params=hp,
        spec=spec,
        num_runs=num_runs if kind != "grid" else 0,
        parallel=parallel,
        metric=metric,
        metric_agg=metric_agg,
        goal=goal,
        options=c.run_options(),
        pool_workflow_id=keys.POOL_WORKFLOW_ID,
        pool_shards=c.settings.pool_shards,
        pool_shard_key=c.settings.pool_shard_key,
        stop_conditions=conditions,
        seed=seed
        if seed is not None
        else (random.SystemRandom().randrange(1, 2**31) if kind == "bayes" else 0),
    )
    try:
        await client.start_workflow(
            HyperWorkflow.run,
            inp,
            id=keys.hyper_workflow_id(hid),
            task_queue=c.settings.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RPCError as e:
        if e.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    return AsyncHyper(c, hid)


async def list_hypers(c: Any, limit: int = 50) -> list[HyperStatus]:
    """The newest searches first: which exist from Temporal's visibility (workflows of
    type HyperWorkflow), each one's status from its workflow (a query; a search holds a
    few summaries, not a metric stream, so this is cheap for the tens a team keeps)."""
    import asyncio

    client = await c.client()
    ids = []
    async for wf in client.list_workflows("WorkflowType='HyperWorkflow'"):
        prefix, _, n = wf.id.partition("-")
        if prefix == "hyper" and n.isdigit():
            ids.append(int(n))
    ids = sorted(set(ids), reverse=True)[: max(limit, 0)]

    async def one(hid: int) -> HyperStatus | None:
        try:
            return await AsyncHyper(c, hid).status(live=False)
        except (ConjureError, RPCError):
            return None  # gone meanwhile, or its history cannot be read

    found = await asyncio.gather(*(one(h) for h in ids))
    return [st for st in found if st is not None]


async def get_hyper(c: Any, hyper_id: int) -> AsyncHyper:
    h = AsyncHyper(c, hyper_id)
    await h.status(live=False)
    return h


def run_state_final(state: str) -> bool:
    try:
        return RunState(state).final
    except ValueError:
        return state == "Not started"
