"""What the console's JSON API answers: one pydantic model per answer, so the
OpenAPI document (`/api/openapi.json`) is generated from the same classes that
shape the answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conjure.workflows.hyper_models import HyperRun, HyperStatus
from conjure.workflows.models import Machine, RunStatus
from conjure.workflows.pipeline_models import PipelineStatus


class RunRow(BaseModel):
    id: int
    state: str
    state_text: str = Field(description="The state with a non-zero exit code: `Failed (137)`")
    exit_code: int | None = None
    machine_type: str
    command: str
    created: datetime | None = None
    ended: datetime | None = None
    duration: float | None = Field(None, description="Seconds; None while the run goes on")
    cost: float | None = Field(None, description="USD so far; None before it had a machine")
    pipeline: int | None = None
    queue_position: int | None = Field(None, description="1 = next, while Requested")


class RunsPage(BaseModel):
    runs: list[RunRow]
    next_before: int | None = Field(
        None, description="Pass as `before` for the next (older) page; null on the last page"
    )
    total: int | None = Field(None, description="How many runs match the filters")


class RunDetail(BaseModel):
    """The run card: the status query's answer (secrets as `<REDACTED>`) and what
    the page derives from it."""

    status: RunStatus
    state_text: str
    final: bool
    created: datetime | None = None
    ended: datetime | None = None
    total_seconds: float | None = None
    cost: float | None = None
    queue_position: int | None = None
    has_diff: bool = Field(description="The run was started with uncommitted changes")
    temporal_url: str = Field("", description="The run's workflow in the Temporal Web UI")


class LogLineOut(BaseModel):
    t: float = Field(description="Seconds since the epoch")
    stream: str = Field(description="o: stdout, e: stderr, c: Conjure's own line")
    text: str


class LogPage(BaseModel):
    lines: list[LogLineOut]
    cursor: str = Field(description="Pass as `after` to get only the lines that follow")
    more: bool = Field(description="More stored lines follow at once: ask again now")


class MetricSeries(BaseModel):
    name: str
    hardware: bool
    index: list[int]
    step: list[int | None]
    value: list[float | None] = Field(description="null stands for NaN or infinity")
    t: list[float] = Field(description="Seconds since the epoch")


class MetricsOut(BaseModel):
    series: list[MetricSeries]


class EntryOut(BaseModel):
    name: str
    path: str = Field(description="The resource path, e.g. runs/12/out/model.bin")
    size: int
    dir: bool


class Listing(BaseModel):
    path: str
    entries: list[EntryOut]


class ActionResult(BaseModel):
    ok: bool = True
    message: str
    state: str = ""


class MachineRow(Machine):
    cost: float


class MachinesOut(BaseModel):
    machines: list[MachineRow]
    queue: int = Field(description="Runs waiting for a machine")
    started: bool = Field(description="False until the first run started the pool")


class PipelineRow(BaseModel):
    id: int
    status: str
    created: datetime | None = None
    ended: datetime | None = None


class PipelinesPage(BaseModel):
    pipelines: list[PipelineRow]
    next_before: int | None = None


class PipelineStepSpec(BaseModel):
    name: str
    command: str
    machine_type: str
    depends_on: list[str] = Field(default_factory=list)


class HyperDetail(BaseModel):
    status: HyperStatus  # runs under way with their state and metric so far
    ranked: list[HyperRun]  # the runs, best first


class PipelineDetail(BaseModel):
    status: PipelineStatus
    steps: list[PipelineStepSpec]


class MachineTypeOut(BaseModel):
    name: str
    vcpus: float
    memory_gb: float
    gpus: int
    price_per_hour: float


class Info(BaseModel):
    version: str
    temporal: str = Field(description="The Temporal server address")
    namespace: str
    temporal_ui: str = Field("", description="The Temporal Web UI, if known")
    store: str
    states: list[str]
    machine_types: list[MachineTypeOut]


class ErrorOut(BaseModel):
    error: str


def jsonable(model: BaseModel) -> Any:
    return model.model_dump(mode="json")
