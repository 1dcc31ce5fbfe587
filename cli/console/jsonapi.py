"""The console's JSON API under /api/: a thin view over the Python API (cli/facade.py,
cli/listing.py, cli/pipelines.py), one endpoint per thing a page shows or does.

Every endpoint is declared once in ENDPOINTS, from which both the routes and the
OpenAPI document are made.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conjure.cli import listing, resources
from conjure.cli.console import downloads
from conjure.cli.console.models import (
    ActionResult,
    EntryOut,
    HyperDetail,
    Info,
    Listing,
    LogLineOut,
    LogPage,
    MachineRow,
    MachinesOut,
    MachineTypeOut,
    MetricSeries,
    MetricsOut,
    PipelineDetail,
    PipelineRow,
    PipelinesPage,
    PipelineStepSpec,
    RunDetail,
    RunRow,
    RunsPage,
)
from conjure.cli.facade import AsyncConjure
from conjure.cli.runs import AsyncRun
from conjure.infra.errors import ConjureError, UsageError
from conjure.infra.metrics import Point
from conjure.workflows import cost as costs
from conjure.workflows import keys
from conjure.workflows.models import RunState, RunStatus

CONSOLE_STOP = "stopped from the web console"
CONSOLE_KILL = "killed from the web console"


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Param:
    name: str
    where: str  # "path" or "query"
    kind: str  # "integer", "string", "boolean"
    description: str = ""
    required: bool = False


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    response: type[BaseModel] | None = None  # None: a file download
    params: list[Param] = field(default_factory=list)
    media_type: str = "application/json"


def _api(request: Request) -> AsyncConjure:
    api: AsyncConjure = request.app.state.conjure
    return api


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name) or request.path_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name}: {raw!r} is not a whole number") from None


def _run_id(request: Request) -> int:
    value = _int(request, "run_id")
    assert value is not None
    return value


# --- runs ------------------------------------------------------------------------------


def run_row(r: listing.RunSummary) -> RunRow:
    return RunRow(
        id=r.run_id,
        state=r.state,
        state_text=r.state_text,
        exit_code=r.exit_code,
        machine_type=r.machine_type,
        command=r.command,
        created=r.created,
        ended=r.ended,
        duration=r.duration,
        cost=r.cost,
        pipeline=r.pipeline_id,
        queue_position=r.queue_position,
    )


async def runs(request: Request) -> Response:
    c = _api(request)
    q = request.query_params
    flt = listing.RunFilter(
        state=q.get("state", ""),
        machine_type=q.get("machine_type", ""),
        text=q.get("q", ""),
        pipeline_id=_int(request, "pipeline"),
    )
    limit = _int(request, "limit", 50) or 50
    before = _int(request, "before")
    flt.query()  # a bad filter is a 400 before anything is asked
    if q.get("count", "1") != "0":
        page, total = await asyncio.gather(
            c.runs_page(flt, limit=limit, before=before),
            listing.count_runs(await c.client(), flt),
        )
    else:
        page, total = await c.runs_page(flt, limit=limit, before=before), None
    return _json(
        RunsPage(runs=[run_row(r) for r in page.runs], next_before=page.next_before, total=total)
    )


def state_text(st: RunStatus) -> str:
    final = st.state.final
    return f"{st.state.value} ({st.exit_code})" if st.exit_code and final else st.state.value


def public_status(st: RunStatus) -> RunStatus:
    """The status as a page may show it: secret values are already `<REDACTED>` in the
    spec; the key of the store object that holds them is left out too."""
    spec = st.spec.model_copy(update={"secrets_key": None})
    return st.model_copy(update={"spec": spec})


async def _temporal_url(request: Request, run_id: int) -> str:
    c = _api(request)
    ui = c.settings.ui_url
    if not ui:
        return ""
    cache: dict[int, str] = request.app.state.run_ids
    if run_id not in cache:
        try:
            desc = (
                await (await c.client())
                .get_workflow_handle(keys.run_workflow_id(run_id))
                .describe()
            )
            cache[run_id] = desc.run_id
        except Exception:
            return ""
    ns = quote(c.settings.temporal_namespace, safe="")
    wid = quote(keys.run_workflow_id(run_id), safe="")
    return f"{ui}/namespaces/{ns}/workflows/{wid}/{quote(cache[run_id], safe='')}/history"


async def run(request: Request) -> Response:
    c = _api(request)
    run_id = _run_id(request)
    handle = AsyncRun(c, run_id)
    st = await handle.status()
    position = None
    if st.state == RunState.REQUESTED:
        position = (await c.queue_positions()).get(handle.workflow_id)
    now = datetime.now(timezone.utc)
    cost = None
    if st.leased_at is not None:
        price = st.spec.machine_type.price_per_hour
        cost = costs.cost(price, st.leased_at, st.released_at or now)
    total = None
    if st.created:
        total = ((st.ended or now) - st.created).total_seconds()
    detail = RunDetail(
        status=public_status(st),
        state_text=state_text(st),
        final=st.state.final,
        created=st.created,
        ended=st.ended,
        total_seconds=total,
        cost=cost,
        queue_position=position,
        has_diff=bool(st.spec.code.patch_key),
        temporal_url=await _temporal_url(request, run_id),
    )
    return _json(detail)


async def run_log(request: Request) -> Response:
    c = _api(request)
    run = AsyncRun(c, _run_id(request))
    after = request.query_params.get("after", "")
    if after and ("/" in after or not after.endswith(".jsonl")):
        raise HTTPError(400, "after: not a cursor this API gave")
    lines, cursor, more = run.log_page(after, follow=request.query_params.get("follow") == "1")
    if not lines and not after:
        await run.status()  # an unknown run is a 404, not an empty log
    return _json(
        LogPage(
            lines=[LogLineOut(t=ln.t / 1e9, stream=ln.stream, text=ln.text) for ln in lines],
            cursor=cursor,
            more=more,
        )
    )


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


async def run_metrics(request: Request) -> Response:
    run = AsyncRun(_api(request), _run_id(request))
    series: dict[str, list[Point]] = run.metric_series()
    if not series:
        await run.status()  # an unknown run is a 404
    out = [
        MetricSeries(
            name=name,
            hardware=name.startswith("hardware/"),
            index=[p.index for p in pts],
            step=[p.step for p in pts],
            value=[_finite(p.value) for p in pts],
            t=[p.t / 1e9 for p in pts],
        )
        for name, pts in series.items()
    ]
    out.sort(key=lambda s: (s.hardware, s.name))
    return _json(MetricsOut(series=out))


async def run_diff(request: Request) -> Response:
    run = AsyncRun(_api(request), _run_id(request))
    data = await run.diff()
    if data is None:
        raise HTTPError(404, f"run {run.id} was started without uncommitted changes")
    return Response(
        data,
        media_type="text/x-diff; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}.diff"'},
    )


async def _control(request: Request, kill: bool) -> Response:
    run = AsyncRun(_api(request), _run_id(request))
    if kill:
        await run.kill(source="console", reason=CONSOLE_KILL)
        message = f"run {run.id} is being killed"
    else:
        await run.stop(source="console", reason=CONSOLE_STOP)
        message = f"run {run.id} is stopping (its files are saved)"
    st = await run.status()
    return _json(ActionResult(message=message, state=st.state.value))


async def run_stop(request: Request) -> Response:
    return await _control(request, kill=False)


async def run_kill(request: Request) -> Response:
    return await _control(request, kill=True)


# --- resources -------------------------------------------------------------------------


def _entry(e: Any) -> EntryOut:
    return EntryOut(name=e.key.rsplit("/", 1)[-1], path=e.key, size=e.size, dir=e.is_dir)


async def resource_list(request: Request) -> Response:
    path = request.query_params.get("path", "").strip().strip("/")
    entries = _api(request).ls(path)
    return _json(Listing(path=path, entries=[_entry(e) for e in entries]))


async def run_outputs(request: Request) -> Response:
    run_id = _run_id(request)
    sub = request.query_params.get("path", "").strip().strip("/")
    path = f"runs/{run_id}" + (f"/{sub}" if sub else "")
    try:
        entries = _api(request).ls(path)
    except UsageError:
        raise
    except ConjureError:
        entries = []  # nothing saved (yet)
    return _json(Listing(path=path, entries=[_entry(e) for e in entries]))


async def resource_download(request: Request) -> Response:
    path = request.query_params.get("path", "")
    if not path.strip("/"):
        raise HTTPError(400, "path: give a file or folder, e.g. runs/12/out")
    return downloads.download(_api(request).store, resources.resource_key(path))


# --- pipelines -------------------------------------------------------------------------


async def pipelines(request: Request) -> Response:
    c = _api(request)
    limit = _int(request, "limit", 50) or 50
    rows, next_before = await listing.pipelines_page(
        await c.client(), limit=limit, before=_int(request, "before")
    )
    return _json(
        PipelinesPage(
            pipelines=[
                PipelineRow(id=p.pipeline_id, status=p.status, created=p.created, ended=p.ended)
                for p in rows
            ],
            next_before=next_before,
        )
    )


async def pipeline(request: Request) -> Response:
    from conjure.cli.pipelines import AsyncPipeline

    p = AsyncPipeline(_api(request), _int(request, "pipeline_id") or 0)
    st = await p.status()
    definition = await p.definition()
    steps = [
        PipelineStepSpec(
            name=s.name,
            command=s.spec.command,
            machine_type=s.spec.machine_type.name,
            depends_on=list(s.depends_on),
        )
        for s in definition.steps
    ]
    return _json(PipelineDetail(status=st, steps=steps))


async def pipeline_stop(request: Request) -> Response:
    from conjure.cli.pipelines import AsyncPipeline

    p = AsyncPipeline(_api(request), _int(request, "pipeline_id") or 0)
    await p.stop()
    return _json(ActionResult(message=f"pipeline {p.id} is stopping", state="Running"))


async def pipeline_resume(request: Request) -> Response:
    from conjure.cli.pipelines import resume_pipeline

    new, reused = await resume_pipeline(_api(request), _int(request, "pipeline_id") or 0)
    note = f" (reusing {', '.join(reused)})" if reused else ""
    return _json(ActionResult(message=f"pipeline {new.id} started{note}", state=str(new.id)))


# --- hyperparameter searches -----------------------------------------------------------


async def hyper(request: Request) -> Response:
    from conjure.cli.hyper import AsyncHyper

    st = await AsyncHyper(_api(request), _int(request, "hyper_id") or 0).status()
    return _json(HyperDetail(status=st, ranked=st.ranked()))


async def hyper_stop(request: Request) -> Response:
    from conjure.cli.hyper import AsyncHyper

    h = AsyncHyper(_api(request), _int(request, "hyper_id") or 0)
    await h.stop()
    return _json(ActionResult(message=f"hyperparameter search {h.id} is stopping", state="Running"))


# --- machines --------------------------------------------------------------------------


async def machines(request: Request) -> Response:
    view = await _api(request).pool_view()
    if view is None:
        return _json(MachinesOut(machines=[], queue=0, started=False))
    now = datetime.now(timezone.utc)
    rows = [
        MachineRow(
            **m.model_dump(),
            cost=costs.cost(m.price_per_hour, m.created, m.ended or now),
        )
        for m in view.machines
    ]
    return _json(MachinesOut(machines=rows, queue=len(view.queue), started=True))


async def machine_terminate(request: Request) -> Response:
    machine_id = str(request.path_params["machine_id"])
    force = request.query_params.get("force", "") in ("1", "true", "yes")
    res = await _api(request).terminate_machine(machine_id, force=force)
    if res.after_run:
        message = f"machine {res.machine_id} will terminate after its run ({res.after_run})"
    else:
        message = f"machine {res.machine_id} is terminating"
    return _json(ActionResult(message=message, state=res.state.value))


# --- about -----------------------------------------------------------------------------


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def info(request: Request) -> Response:
    from importlib.metadata import PackageNotFoundError, version

    c = _api(request)
    try:
        v = version("conjure")
    except PackageNotFoundError:
        v = "unknown"
    return _json(
        Info(
            version=v,
            temporal=c.settings.address,
            namespace=c.settings.temporal_namespace,
            temporal_ui=c.settings.ui_url,
            store=_without_credentials(c.settings.store),
            states=[s.value for s in RunState],
            machine_types=[
                MachineTypeOut(
                    name=m.name,
                    vcpus=m.vcpus,
                    memory_gb=m.memory_gb,
                    gpus=m.gpus,
                    price_per_hour=m.price_per_hour,
                )
                for m in c.catalog.values()
            ],
        )
    )


_RUN = Param("run_id", "path", "integer", "The run's id", required=True)
_PIPE = Param("pipeline_id", "path", "integer", "The pipeline's id", required=True)
_HYPER = Param("hyper_id", "path", "integer", "The search's id", required=True)
_LIMIT = Param("limit", "query", "integer", "Rows per page (default 50, at most 500)")
_BEFORE = Param("before", "query", "integer", "Only ids below this (the previous `next_before`)")

ENDPOINTS = [
    Endpoint("GET", "/api/info", info, "Server, store and catalog", Info),
    Endpoint(
        "GET",
        "/api/runs",
        runs,
        "Runs, newest first, from Temporal's visibility",
        RunsPage,
        [
            Param("state", "query", "string", "Only runs in this state (Running, Failed, ...)"),
            Param("machine_type", "query", "string", "Only runs of this machine type"),
            Param("q", "query", "string", "Only runs whose command has these words"),
            Param("pipeline", "query", "integer", "Only the runs of this pipeline"),
            _LIMIT,
            _BEFORE,
            Param("count", "query", "string", "0: leave out `total`"),
        ],
    ),  # fmt: skip
    Endpoint("GET", "/api/runs/{run_id:int}", run, "One run's card", RunDetail, [_RUN]),
    Endpoint(
        "GET",
        "/api/runs/{run_id:int}/log",
        run_log,
        "A run's log lines after a cursor",
        LogPage,
        [
            _RUN,
            Param("after", "query", "string", "The `cursor` of the previous answer"),
            Param("follow", "query", "string", "1: a live run is watched (flush its log fast)"),
        ],
    ),  # fmt: skip
    Endpoint(
        "GET", "/api/runs/{run_id:int}/metrics", run_metrics, "A run's metrics", MetricsOut, [_RUN]
    ),
    Endpoint(
        "GET",
        "/api/runs/{run_id:int}/outputs",
        run_outputs,
        "A folder of a run's outputs",
        Listing,
        [_RUN, Param("path", "query", "string", "A folder below runs/N")],
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/runs/{run_id:int}/diff",
        run_diff,
        "The run's uncommitted changes (a .diff)",
        None,
        [_RUN],
        "text/x-diff",
    ),  # fmt: skip
    Endpoint(
        "POST",
        "/api/runs/{run_id:int}/stop",
        run_stop,
        "Stop: SIGTERM, then save",
        ActionResult,
        [_RUN],
    ),  # fmt: skip
    Endpoint(
        "POST",
        "/api/runs/{run_id:int}/kill",
        run_kill,
        "Kill: SIGKILL, nothing saved",
        ActionResult,
        [_RUN],
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/resources",
        resource_list,
        "List a folder of runs/, uploads/ or public/",
        Listing,
        [Param("path", "query", "string", "'' lists the roots")],
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/resources/download",
        resource_download,
        "Download a file, or a folder as a .tar.gz stream",
        None,
        [Param("path", "query", "string", "e.g. runs/12/out/model.bin", required=True)],
        "application/octet-stream",
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/pipelines",
        pipelines,
        "Pipelines, newest first",
        PipelinesPage,
        [_LIMIT, _BEFORE],
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/pipelines/{pipeline_id:int}",
        pipeline,
        "One pipeline's steps and runs",
        PipelineDetail,
        [_PIPE],
    ),  # fmt: skip
    Endpoint(
        "POST",
        "/api/pipelines/{pipeline_id:int}/stop",
        pipeline_stop,
        "Stop a pipeline",
        ActionResult,
        [_PIPE],
    ),  # fmt: skip
    Endpoint(
        "POST",
        "/api/pipelines/{pipeline_id:int}/resume",
        pipeline_resume,
        "Start a new pipeline that reruns the steps that did not complete",
        ActionResult,
        [_PIPE],
    ),  # fmt: skip
    Endpoint(
        "GET",
        "/api/hypers/{hyper_id:int}",
        hyper,
        "One hyperparameter search: its runs, values and metric, best first",
        HyperDetail,
        [_HYPER],
    ),  # fmt: skip
    Endpoint(
        "POST",
        "/api/hypers/{hyper_id:int}/stop",
        hyper_stop,
        "Stop a hyperparameter search: its runs are stopped, no new one starts",
        ActionResult,
        [_HYPER],
    ),  # fmt: skip
    Endpoint("GET", "/api/machines", machines, "The pool's machines", MachinesOut),
    Endpoint(
        "POST",
        "/api/machines/{machine_id}/terminate",
        machine_terminate,
        "Terminate a machine (after its run unless force)",
        ActionResult,
        [
            Param("machine_id", "path", "string", "The machine's id", required=True),
            Param("force", "query", "boolean", "Now, interrupting its run"),
        ],
    ),  # fmt: skip
]
