"""The durable contract of pipelines (workflows/pipeline.py).

New fields always get a default, so histories written by an older Conjure still decode.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field

from conjure.workflows.models import RunOptions, RunSpec

# A step's mount source may start with this template: `{steps.prepare}/data` is
# resolved to `runs/<N>/data`, N being the run of step `prepare`, when the step starts.
STEP_REF_PREFIX = "{steps."


def step_ref(source: str) -> tuple[str, str] | None:
    """`{steps.prepare}/data` -> ("prepare", "/data"); None for a plain source."""
    if not source.startswith(STEP_REF_PREFIX):
        return None
    name, close, rest = source[len(STEP_REF_PREFIX) :].partition("}")
    if not close or not name:
        return None
    return name, rest


class StepState(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # a step it depends on did not complete
    STOPPED = "Stopped"

    @property
    def final(self) -> bool:
        return self not in (StepState.PENDING, StepState.RUNNING)


class PipelineState(str, Enum):
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    STOPPED = "Stopped"


class PipelineStep(BaseModel):
    name: str
    spec: RunSpec  # mount sources may be `{steps.NAME}/path`
    depends_on: list[str] = Field(default_factory=list)


class PipelineInput(BaseModel):
    pipeline_id: int
    name: str = ""
    steps: list[PipelineStep]
    options: RunOptions = Field(default_factory=RunOptions)
    pool_workflow_id: str = "conjure-pool"
    pool_shards: int = 1  # runs lease from their shard of it (workflows/pool_shards.py)
    pool_shard_key: str = "run"
    # Resume: step name -> the run that completed it in an earlier attempt.
    reuse: dict[str, int] = Field(default_factory=dict)
    resumed_from: int | None = None


class StepStatus(BaseModel):
    name: str
    depends_on: list[str] = Field(default_factory=list)
    state: StepState = StepState.PENDING
    run_id: int | None = None
    run_state: str = ""  # the run's own final state (Complete, Failed, Killed, ...)
    reused: bool = False  # completed by an earlier attempt (resume)
    reason: str = ""


class PipelineStatus(BaseModel):
    pipeline_id: int
    name: str = ""
    state: PipelineState = PipelineState.RUNNING
    steps: list[StepStatus] = Field(default_factory=list)
    resumed_from: int | None = None
    created: datetime | None = None
    ended: datetime | None = None
    reason: str = ""
