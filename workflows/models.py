"""The durable contract: every workflow and activity input and result.

These models are serialised into Temporal histories. New fields always get a
default, so histories written by an older Conjure still decode.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from conjure.workflows.stop_conditions import StopCondition


class RunState(str, Enum):
    REQUESTED = "Requested"
    BUILDING = "Building"
    MOUNTING = "Mounting"
    RUNNING = "Running"
    SAVING = "Saving"
    PUSHING = "Pushing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    STOPPED = "Stopped"
    KILLED = "Killed"
    INTERRUPTED = "Interrupted"
    # Shown, never set by the workflow: its workflow was terminated from outside
    # (the Temporal Web UI's Terminate or Reset) before it reached a final state.
    TERMINATED = "Terminated"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        RunState.COMPLETE,
        RunState.FAILED,
        RunState.STOPPED,
        RunState.KILLED,
        RunState.INTERRUPTED,
        RunState.TERMINATED,
    }
)


# --- Machine types ------------------------------------------------------------------


class MachineType(BaseModel):
    name: str
    vcpus: float
    memory_gb: float
    gpus: int = 0
    gpu_model: str = ""
    price_per_hour: float = 0.0
    spot: bool = False
    instance_types: dict[str, str] = Field(default_factory=dict)
    provider: str = ""  # who provides machines of this type; empty: the configured provider


# --- Run spec -----------------------------------------------------------------------


class CodeSpec(BaseModel):
    """Where the run's code comes from. Keys name objects in the store."""

    archive_key: str | None = None  # code/<sha256>.tar.gz of the committed tree (older runs)
    git_key: str | None = None  # code/git/<commit>.pack: the commit and its tree
    patch_key: str | None = None  # code/<sha256>.patch of uncommitted changes
    repo_name: str | None = None  # the container working dir is /conjure/<repo_name>
    relative_cwd: str = ""  # the user's cwd relative to the repository root
    commit: str | None = None
    github_url: str | None = None  # --github-url: the code is that repository's tree
    ref: str | None = None  # --github-ref / --commit-ref as the user gave it
    branch: str | None = None  # the local branch at submission (the run's checkout's name)


class MountSpec(BaseModel):
    source: str  # runs/N/path, uploads/..., public/..., or s3://, gs://, az:// bucket/path
    dest: str  # absolute path inside the container


class EnvSpec(BaseModel):
    """The run's environment, validated by the client (infra/environment.py).

    User values never become Dockerfile text: they are written as data files into
    the build context. `tag` is the content hash the client computed; empty means
    the base image is used as it is.
    """

    docker_image: str = ""  # --docker-image: the base instead of Conjure's
    framework: str = "default"
    framework_pip: list[str] = Field(default_factory=list)  # the framework's packages
    apt: list[str] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)
    pip_req: str = ""  # normalised contents of the --pip-req file
    conda_file: str = ""  # normalised contents of the --conda-file (YAML)
    framework_tag: str = ""  # the framework image (empty: none, FROM the base)
    tag: str = ""  # the environment image (empty: the base or framework image as is)


class RunSpec(BaseModel):
    command: str
    machine_type: MachineType
    code: CodeSpec = Field(default_factory=CodeSpec)
    mounts: list[MountSpec] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # SECRET* values are "<REDACTED>"
    request_id: str = ""
    environment: EnvSpec = Field(default_factory=EnvSpec)
    secrets_key: str | None = None  # secrets/<request id>.json: the real SECRET* values
    pipeline_id: int | None = None  # set on the runs of a pipeline
    pipeline_step: str = ""
    hyper_id: int | None = None  # set on the runs of a hyperparameter search
    # --auto-resume N: a run whose machine is lost goes on from its saved files on a new
    # machine, up to N attempts in all (0: off); --spot-fallback K: after K interruptions
    # the next attempts ask for the machine type on demand (not spot)
    auto_resume: int = 0
    spot_fallback: int = 0


class RunOptions(BaseModel):
    """Settings of the submitting client that the run keeps for its whole life."""

    base_image: str = "conjure/base:bookworm"
    log_lines_per_window: int = 1000
    log_window_seconds: float = 10.0
    stop_grace_seconds: float = 30.0
    execute_heartbeat_seconds: float = 20.0
    registry: str = ""  # push built environments there, pull missing ones from there
    hardware_metrics_seconds: float = 10.0  # 0: no hardware metrics
    checkpoint_sync_seconds: float = 0.0  # auto-resume: sync the working dir this often


class RunInput(BaseModel):
    run_id: int
    spec: RunSpec
    options: RunOptions = Field(default_factory=RunOptions)
    pool_workflow_id: str = "conjure-pool"
    stop_conditions: list[StopCondition] = Field(default_factory=list)


class StateChange(BaseModel):
    state: RunState
    at: datetime
    detail: str = ""


class RunAttempt(BaseModel):
    """One machine a run was on (`--auto-resume` makes more than one)."""

    attempt: int
    machine_id: str
    machine_type: str = ""
    spot: bool = False
    started: datetime | None = None  # leased
    ended: datetime | None = None  # released
    state: str = ""  # how it ended: Interrupted, or the run's final state
    reason: str = ""
    cost: float = 0.0


class RunStatus(BaseModel):
    run_id: int
    state: RunState
    spec: RunSpec
    timeline: list[StateChange] = Field(default_factory=list)
    machine_id: str | None = None
    reused_machine: bool | None = None
    exit_code: int | None = None
    image: str | None = None
    image_cached: bool | None = None
    image_source: str = ""  # cached, built, pulled (from the registry) or base
    image_pushed: bool | None = None
    reason: str = ""
    outputs: int = 0
    output_bytes: int = 0
    stop_conditions: list[str] = Field(default_factory=list)
    stopped_by: str = ""  # what stopped or killed the run (`conjure stop`, a stop condition…)
    log_tail: list[str] = Field(default_factory=list)  # the failed step's log, last lines
    mounts_cached: list[bool] = Field(default_factory=list)  # per mount: already on the machine
    # Cost: the machine's price per hour times the time the run held it.
    leased_at: datetime | None = None
    released_at: datetime | None = None
    cost: float = 0.0  # over every attempt
    attempts: list[RunAttempt] = Field(default_factory=list)  # --auto-resume runs only
    # Set by the client, never by the workflow: why this is the state the run's history
    # records rather than the workflow's own answer (no control worker answered).
    stale: str = ""

    @property
    def created(self) -> datetime | None:
        return self.timeline[0].at if self.timeline else None

    @property
    def ended(self) -> datetime | None:
        return self.timeline[-1].at if self.timeline and self.state.final else None


# --- Counter ------------------------------------------------------------------------


class AllocateInput(BaseModel):
    request_id: str


class AllocateResult(BaseModel):
    run_id: int
    new: bool = True


class CounterState(BaseModel):
    next_id: int = 1
    recent: dict[str, int] = Field(default_factory=dict)  # request id -> run id


# --- Pool ---------------------------------------------------------------------------


class MachineState(str, Enum):
    PROVISIONING = "provisioning"
    BUSY = "busy"
    IDLE = "idle"
    TERMINATING = "terminating"


class Machine(BaseModel):
    id: str
    machine_type: str
    provider: str
    task_queue: str
    state: MachineState
    created: datetime
    idle_since: datetime | None = None
    run_workflow_id: str | None = None
    runs_served: int = 0
    images: list[str] = Field(default_factory=list)
    price_per_hour: float = 0.0
    terminate_after_run: bool = False  # `conjure machines terminate` while busy
    spot: bool = False  # a spot/preemptible instance (as its provider reported it)
    ended: datetime | None = None  # when termination started
    reason: str = ""  # why it is terminating


class LeaseRequest(BaseModel):
    run_workflow_id: str
    run_id: int
    machine_type: MachineType
    image_hint: str | None = None


class Lease(BaseModel):
    machine_id: str
    task_queue: str
    machine_type: str
    provider: str
    reused: bool
    spot: bool = False  # the machine is a spot/preemptible instance


class ReleaseRequest(BaseModel):
    machine_id: str
    run_workflow_id: str
    healthy: bool = True
    image: str | None = None


class CancelLeaseRequest(BaseModel):
    run_workflow_id: str


class PoolConfig(BaseModel):
    provider: str = "local"
    idle_timeout_seconds: float = 300.0
    max_concurrent_runs: int = 0
    machine_ready_timeout_seconds: float = 120.0
    health_check_seconds: float = 30.0  # ask the provider whether machines still exist; 0: off
    max_machines: dict[str, int] = Field(default_factory=dict)  # machine type or provider -> cap
    reconcile_interval_seconds: float = 60.0  # 0: no reconciler, no health checks
    agent_timeout_seconds: float = 60.0  # an idle agent silent this long is terminated
    other_providers: list[str] = Field(default_factory=list)  # named by machine types
    # This pool's place among the pool shards (workflows/pool_shards.py); limits above
    # are this shard's shares.
    shard: int = 0
    shards: int = 1
    shard_key: str = "run"


class PoolState(BaseModel):
    machines: dict[str, Machine] = Field(default_factory=dict)
    queue: list[LeaseRequest] = Field(default_factory=list)
    last_reconcile: datetime | None = None
    orphans_terminated: int = 0
    unresponsive_terminated: int = 0


class PoolInput(BaseModel):
    config: PoolConfig = Field(default_factory=PoolConfig)
    state: PoolState | None = None


class PoolView(BaseModel):
    machines: list[Machine]
    queue: list[LeaseRequest]
    config: PoolConfig
    last_reconcile: datetime | None = None
    orphans_terminated: int = 0
    unresponsive_terminated: int = 0


class PoolConfigure(BaseModel):
    """Signal `configure`: the named fields of `config` replace the pool's (all if empty)."""

    config: PoolConfig
    fields: list[str] = Field(default_factory=list)


class TerminateMachineRequest(BaseModel):
    machine_id: str
    force: bool = False


class TerminateMachineResult(BaseModel):
    machine_id: str
    state: MachineState
    after_run: str | None = None  # the run it finishes first (no --force)


class Instance(BaseModel):
    """A provider's machine, cloud-neutral: what every provider (infra/providers/) returns
    and the reconciler reads (`list_machines`). A local machine's instance id is its
    agent's pid."""

    machine_id: str
    state: str = "pending"  # pending | running | stopped | terminated | reclaimed
    instance_id: str = ""
    machine_type: str = ""  # the machine type's name
    provider: str = ""
    instance_type: str = ""  # the provider's own type (t3.large, e2-standard-4, ...)
    spot: bool = False


class ListMachinesInput(BaseModel):
    provider: str


class ListMachinesResult(BaseModel):
    instances: list[Instance] = Field(default_factory=list)


# --- Provider activities (control queue) --------------------------------------------


class ProvisionInput(BaseModel):
    machine_id: str
    machine_type: MachineType
    provider: str


class ProvisionResult(BaseModel):
    machine_id: str
    task_queue: str
    instance_id: str = ""
    spot: bool = False  # what the provider gave: a spot/preemptible instance


class TerminateInput(BaseModel):
    machine_id: str
    provider: str


class DescribeMachinesInput(BaseModel):
    machines: list[TerminateInput] = Field(default_factory=list)


class DescribeMachinesResult(BaseModel):
    gone: dict[str, str] = Field(default_factory=dict)  # machine id -> what the provider says


class MachineReadyInput(BaseModel):
    machine_id: str

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        # Histories written before this model carry the machine id as a bare string.
        return {"machine_id": data} if isinstance(data, str) else data


class MachineInfo(BaseModel):
    machine_id: str
    ready: bool = True
    images: list[str] = Field(default_factory=list)


# --- Machine-local activities (machine queue) ----------------------------------------


class PrepareInput(BaseModel):
    run_id: int
    code: CodeSpec
    mounts: list[MountSpec] = Field(default_factory=list)
    restore: bool = False  # a resumed attempt: runs/<N>/ of the store into the working dir


class PrepareResult(BaseModel):
    workspace: str  # host path bound at /conjure
    workdir: str  # container working directory


class EnvInput(BaseModel):
    run_id: int
    base_image: str
    spec: EnvSpec = Field(default_factory=EnvSpec)
    registry: str = ""


class EnvResult(BaseModel):
    image: str
    cached: bool
    source: str = ""  # cached, built, pulled, base
    push: bool = False  # built here with a registry configured: push it


class PushInput(BaseModel):
    run_id: int
    image: str


class PushResult(BaseModel):
    image: str
    pushed: bool = True
    detail: str = ""


class Bind(BaseModel):
    host: str
    container: str
    read_only: bool = True
    # An overlay: host is the read-only lower layer, writes land in overlay_upper.
    overlay_upper: str = ""
    overlay_work: str = ""


class MountInput(BaseModel):
    run_id: int
    mounts: list[MountSpec]


class MountResult(BaseModel):
    binds: list[Bind] = Field(default_factory=list)
    cached: list[bool] = Field(default_factory=list)
    sizes: list[int] = Field(default_factory=list)  # bytes of each source


class ExecuteInput(BaseModel):
    """The run's command on its machine: the spec and options whole (command, env,
    secrets, machine type; log and metrics settings), where the steps before put it."""

    run_id: int
    image: str
    spec: RunSpec
    options: RunOptions = Field(default_factory=RunOptions)
    prepared: PrepareResult
    binds: list[Bind] = Field(default_factory=list)
    metrics_workflow_id: str = ""  # where watched metrics are signalled (stop conditions)
    watch_metrics: list[str] = Field(default_factory=list)
    resume: bool = False  # a re-attach to the run's container after a lost attempt

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """Histories written before this shape carry the spec's and options' fields flat."""
        if not isinstance(data, dict) or "spec" in data or "command" not in data:
            return data
        d = dict(data)
        spec = {
            "command": d.pop("command"),
            "env": d.pop("env", {}),
            "secrets_key": d.pop("secrets_key", None),
            "machine_type": {
                "name": "",
                "vcpus": d.pop("cpus", 0),
                "memory_gb": d.pop("memory_gb", 0),
                "gpus": d.pop("gpus", 0),
            },
        }
        options = {
            k: d.pop(k)
            for k in ("log_lines_per_window", "log_window_seconds", "hardware_metrics_seconds")
            if k in d
        }
        prepared = {"workspace": d.pop("workspace"), "workdir": d.pop("workdir")}
        return {**d, "spec": spec, "options": options, "prepared": prepared}


class ExecuteResult(BaseModel):
    exit_code: int
    oom_killed: bool = False
    log_lines: int = 0
    dropped_lines: int = 0


class SaveInput(BaseModel):
    run_id: int
    workdir: str
    exclude: list[str] = Field(default_factory=list)  # container paths of mounts


class SaveResult(BaseModel):
    files: int
    bytes: int


class CleanupInput(BaseModel):
    run_id: int


class ForgetSecretsInput(BaseModel):
    """A final run's stored secret values, to delete (`secrets/<request id>.json`)."""

    key: str


class SignalContainerInput(BaseModel):
    """Stop (SIGTERM, then SIGKILL after `grace` seconds) or kill the run's container."""

    run_id: int
    kind: str = "stop"  # stop | kill
    grace: float = 30.0
