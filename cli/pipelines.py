"""Pipelines from Python or YAML: a graph of steps, each an ordinary run.

    from conjure import Conjure, Step

    p = Conjure().pipeline([
        Step("prepare", "python prepare.py"),
        Step("train", "python train.py", mounts=["{steps.prepare}/data:/mnt/data"]),
    ])
    print(p.id, p.wait().state)

A mount naming `{steps.NAME}` makes the step depend on NAME (as does `depends_on`).
The pipeline runs as the workflow `pipeline-<P>` (workflows/pipeline.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from conjure.cli import specs
from conjure.cli.client import Connection
from conjure.cli.pool import ensure_pool
from conjure.cli.runs import AsyncRun
from conjure.cli.specs import RUN_ARG_NAMES, RunArgs, Warn
from conjure.infra.counters import allocate
from conjure.infra.errors import ConflictError, NotFoundError, UsageError
from conjure.workflows import keys
from conjure.workflows.pipeline import PipelineWorkflow
from conjure.workflows.pipeline_models import (
    PipelineInput,
    PipelineState,
    PipelineStatus,
    PipelineStep,
    StepState,
    step_ref,
)

# A step takes the run arguments but those a pipeline cannot carry: stop conditions live
# in a run's workflow input, and the environment files and --deps-from-env are read from
# the terminal's directory and environment.
NOT_IN_STEPS = {"stop_conditions", "pip_req", "conda_file", "deps_from_env"}
STEP_KEYS = {"command", "depends_on"} | (set(RUN_ARG_NAMES) - NOT_IN_STEPS)


@dataclass
class Step(RunArgs):
    """One step of a pipeline: a run, by name, with the steps it depends on."""

    name: str
    command: str
    depends_on: list[str] = field(default_factory=list)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def load_yaml(path: Path) -> tuple[str, list[Step]]:
    """A pipeline file:

    name: train-model            # optional
    steps:
      prepare:
        command: python prepare.py
      train:
        command: python train.py
        machine_type: cpu-big
        mounts: ["{steps.prepare}/data:/mnt/data"]
        env: {EPOCHS: "3"}
      evaluate:
        command: python evaluate.py
        depends_on: [train]
    """
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), dict) or not doc["steps"]:
        raise UsageError(f"{path}: expected a mapping with `steps:`, a mapping of step names")
    steps = []
    for name, body in doc["steps"].items():
        if isinstance(body, str):
            body = {"command": body}
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            raise UsageError(f"{path}: step {name!r} needs a `command:`")
        unknown = set(body) - STEP_KEYS
        if unknown:
            raise UsageError(
                f"{path}: step {name!r} has unknown key(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(STEP_KEYS))})"
            )
        deps = body.get("depends_on") or []
        if isinstance(deps, str):
            deps = [deps]
        mounts = body.get("mounts") or []
        if isinstance(mounts, str):
            mounts = [mounts]
        env = body.get("env") or {}
        if not isinstance(env, dict):
            raise UsageError(f"{path}: step {name!r}: `env:` must be a mapping NAME: VALUE")
        steps.append(
            Step(
                name=str(name),
                command=body["command"],
                depends_on=[str(d) for d in deps],
                machine_type=body.get("machine_type"),
                mounts=[str(m) for m in mounts],
                env={str(k): str(v) for k, v in env.items()},
                github_url=body.get("github_url"),
                github_ref=body.get("github_ref"),
                commit_ref=body.get("commit_ref"),
                apt=_strings(body.get("apt")),
                pip=_strings(body.get("pip")),
                framework=body.get("framework"),
                docker_image=body.get("docker_image"),
            )
        )
    return str(doc.get("name") or path.stem), steps


def check_graph(steps: Sequence[Step]) -> dict[str, list[str]]:
    """Step name -> its dependencies (declared plus those its mounts name); no cycles."""
    names = [s.name for s in steps]
    if not steps:
        raise UsageError("a pipeline needs at least one step")
    for n in names:
        if not n or not all(ch.isalnum() or ch in "-_" for ch in n):
            raise UsageError(f"step name {n!r}: use letters, digits, '-' and '_'")
    if len(set(names)) != len(names):
        raise UsageError("two steps have the same name")
    deps: dict[str, list[str]] = {}
    for s in steps:
        d = list(dict.fromkeys(s.depends_on))
        for m in s.mounts:
            ref = step_ref(m.strip())
            if ref is not None and ref[0] not in d:
                d.append(ref[0])
        for x in d:
            if x not in names:
                raise UsageError(f"step {s.name!r} depends on {x!r}, which is not a step")
            if x == s.name:
                raise UsageError(f"step {s.name!r} depends on itself")
        deps[s.name] = d
    seen: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if seen.get(n) == 2:
            return
        if seen.get(n) == 1:
            raise UsageError(
                f"the steps depend on each other in a cycle: {' -> '.join(path + [n])}"
            )
        seen[n] = 1
        for x in deps[n]:
            visit(x, path + [n])
        seen[n] = 2

    for n in names:
        visit(n, [])
    return deps


class AsyncPipeline:
    """A handle on one pipeline."""

    def __init__(self, conn: Connection, pipeline_id: int) -> None:
        self._c = conn
        self.id = pipeline_id

    @property
    def workflow_id(self) -> str:
        return keys.pipeline_workflow_id(self.id)

    async def _handle(self) -> WorkflowHandle[Any, Any]:
        return (await self._c.client()).get_workflow_handle(self.workflow_id)

    async def status(self) -> PipelineStatus:
        try:
            return await (await self._handle()).query(PipelineWorkflow.status)
        except RPCError as e:
            raise self._not_found(e) from None

    async def definition(self) -> PipelineInput:
        try:
            return await (await self._handle()).query(PipelineWorkflow.definition)
        except RPCError as e:
            raise self._not_found(e) from None

    def _not_found(self, e: RPCError) -> Exception:
        if e.status == RPCStatusCode.NOT_FOUND:
            return NotFoundError(f"pipeline {self.id} does not exist")
        return e

    async def wait(self) -> PipelineStatus:
        await self.status()
        client = await self._c.client()
        handle = client.get_workflow_handle(self.workflow_id, result_type=PipelineStatus)
        return await handle.result()

    async def stop(self) -> PipelineStatus:
        st = await self.status()
        if st.state != PipelineState.RUNNING:
            raise ConflictError(f"pipeline {self.id} is already {st.state.value}")
        await (await self._handle()).signal(PipelineWorkflow.stop)
        return st

    def run(self, step: str, status: PipelineStatus) -> AsyncRun:
        """The run of step (as of status)."""
        for s in status.steps:
            if s.name == step and s.run_id is not None:
                return AsyncRun(self._c, s.run_id)
        raise NotFoundError(f"step {step!r} of pipeline {self.id} has no run")


async def allocate_pipeline_id(c: Connection, request_id: str) -> int:
    result = await allocate(
        await c.client(),
        keys.PIPELINE_COUNTER_WORKFLOW_ID,
        c.settings.control_task_queue,
        request_id,
    )
    return result.run_id


async def run_pipeline(
    c: Connection,
    steps: Sequence[Step],
    *,
    name: str = "",
    cwd: Path | None = None,
    warn: Warn | None = None,
) -> AsyncPipeline:
    """Validate every step, package the code once, start `pipeline-<P>`."""
    deps = check_graph(steps)
    request_id = uuid.uuid4().hex
    default_code = None
    step_specs = []
    for s in steps:
        code = None
        if not (s.github_url or s.commit_ref):
            if default_code is None:
                default_code = specs.package(c, cwd, warn=warn)
            code = default_code
        spec = await specs.build_spec(
            c,
            s.command,
            s,
            cwd=cwd,
            request_id=f"{request_id}-{s.name}",
            step_refs=set(deps[s.name]),
            code=code,
            warn=warn,
        )
        step_specs.append(PipelineStep(name=s.name, spec=spec, depends_on=deps[s.name]))
    return await _start(c, PipelineInput(pipeline_id=0, name=name, steps=step_specs), request_id)


async def _start(c: Connection, inp: PipelineInput, request_id: str) -> AsyncPipeline:
    client = await c.client()
    await ensure_pool(c)
    pid = await allocate_pipeline_id(c, request_id)
    inp = inp.model_copy(
        update={
            "pipeline_id": pid,
            "options": c.run_options(),
            "pool_workflow_id": keys.POOL_WORKFLOW_ID,
            "pool_shards": c.settings.pool_shards,
            "pool_shard_key": c.settings.pool_shard_key,
        }
    )
    try:
        await client.start_workflow(
            PipelineWorkflow.run,
            inp,
            id=keys.pipeline_workflow_id(pid),
            task_queue=c.settings.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes([SearchAttributePair(keys.PIPELINE_ID, pid)]),
        )
    except RPCError as e:
        if e.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    return AsyncPipeline(c, pid)


async def get_pipeline(c: Connection, pipeline_id: int) -> AsyncPipeline:
    p = AsyncPipeline(c, pipeline_id)
    await p.status()
    return p


async def resume_pipeline(c: Connection, pipeline_id: int) -> tuple[AsyncPipeline, list[str]]:
    """A new pipeline with P's steps that reruns only those that did not complete,
    reusing the runs (and so the outputs) of those that did. Returns it and the
    names of the steps reused."""
    old = AsyncPipeline(c, pipeline_id)
    st = await old.status()
    if st.state == PipelineState.RUNNING:
        raise ConflictError(f"pipeline {pipeline_id} is still running")
    if st.state == PipelineState.COMPLETE:
        raise ConflictError(f"pipeline {pipeline_id} is complete: nothing to resume")
    definition = await old.definition()
    reuse = {
        s.name: s.run_id for s in st.steps if s.state == StepState.COMPLETE and s.run_id is not None
    }
    inp = definition.model_copy(update={"reuse": reuse, "resumed_from": pipeline_id})
    new = await _start(c, inp, uuid.uuid4().hex)
    return new, sorted(reuse)
