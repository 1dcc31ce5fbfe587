"""`AsyncConjure`: the Python API for asyncio code, one object over the API's rooms
(spec building, run handles, pipelines, the pool, the store). `Conjure` (cli/sync.py) is
the same for plain code.

    from conjure import AsyncConjure
    c = AsyncConjure()
    run = await c.run("python train.py", machine_type="cpu", mounts=["runs/12/out:/mnt/data"])
    print(run.id, (await run.wait()).state)

Errors are the typed ConjureErrors of conjure.infra.errors; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from conjure.cli import pool as pools
from conjure.cli import resources, runs, specs
from conjure.cli.client import Connection
from conjure.cli.listing import RunFilter, RunsPage, RunSummary
from conjure.cli.runs import AsyncRun
from conjure.cli.specs import RunArgs, Warn
from conjure.infra.errors import UsageError
from conjure.infra.store import Entry
from conjure.workflows.models import (
    EnvSpec,
    MachineType,
    PoolView,
    RunOptions,
    RunSpec,
    TerminateMachineResult,
)
from conjure.workflows.stop_conditions import StopCondition

if TYPE_CHECKING:  # pipelines are imported when used: `conjure run` does without them
    from conjure.cli.pipelines import AsyncPipeline, Step
    from conjure.infra.environment import Framework


class AsyncConjure(Connection):
    """`AsyncConjure(settings=None, autostart=True)`: settings default to the environment
    and ~/.conjure/config.toml; autostart starts the embedded stack when it is down."""

    # --- runs ------------------------------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        cwd: Path | None = None,
        code_dir: Path | str | None = None,
        request_id: str | None = None,
        warn: Warn | None = None,
        **args: Any,
    ) -> AsyncRun:
        """Validate, package the code, allocate an id and start the run workflow.

        mounts: strings `SRC[:DEST]`, or a dict `{SRC: DEST}` as Spell took them
        (`{"runs/12/input.txt": "/data/input.txt"}`); code_dir: the directory whose git
        repository is the run's code (and whose place in it the working directory), instead
        of the process's working directory.

        args: the fields of RunArgs (machine_type, mounts, env, github_url, github_ref,
        commit_ref, apt, pip, pip_req, conda_file, docker_image, framework,
        deps_from_env, stop_conditions, auto_resume, spot_fallback)."""
        if code_dir is not None:
            cwd = Path(code_dir).expanduser()
            if not cwd.is_dir():
                raise UsageError(f"code_dir {code_dir}: no such directory")
        ra = RunArgs(**args)
        conditions = specs.parse_stop_conditions(ra.stop_conditions)  # malformed: nothing starts
        spec = await specs.build_spec(self, command, ra, cwd=cwd, request_id=request_id, warn=warn)
        return await runs.start_run(self, spec, self.run_options(), conditions)

    async def rerun(
        self,
        run_id: int,
        command: str | None = None,
        *,
        cwd: Path | None = None,
        warn: Warn | None = None,
        **args: Any,
    ) -> AsyncRun:
        """A new run with run_id's spec; command and args given here override it
        (mounts=None keeps the run's mounts).

        Secret values are not kept for reruns: a SECRET* variable that is not given
        again is `<REDACTED>` in the new run (as Spell does)."""
        keep_mounts = args.get("mounts") is None
        ra = RunArgs(**args)
        specs.check_rerun_args(ra)  # malformed: exit 2 before the run is looked up
        old = (await AsyncRun(self, run_id).status()).spec
        spec = await specs.rerun_spec(
            self, old, command, ra, keep_mounts=keep_mounts, cwd=cwd, warn=warn
        )
        return await runs.start_run(self, spec, self.run_options())

    async def get(self, run_id: int) -> AsyncRun:
        return await runs.get_run(self, run_id)

    async def list_runs(
        self,
        limit: int = 50,
        state: str | None = None,
        *,
        machine_type: str = "",
        text: str = "",
        before: int | None = None,
    ) -> list[RunSummary]:
        """The newest runs first (ids below `before`), from Temporal's visibility."""
        flt = RunFilter(state=state or "", machine_type=machine_type, text=text)
        return (await self.runs_page(flt, limit=limit, before=before)).runs

    async def runs_page(
        self, flt: RunFilter | None = None, *, limit: int = 50, before: int | None = None
    ) -> RunsPage:
        """A page of runs and the `before` of the next one (see pool.runs_page)."""
        return await pools.runs_page(self, flt, limit=limit, before=before)

    async def submit(
        self,
        spec: RunSpec,
        options: RunOptions | None = None,
        stop_conditions: Sequence[StopCondition] = (),
    ) -> AsyncRun:
        """Start a run of an already built spec."""
        return await runs.start_run(self, spec, options, stop_conditions)

    async def allocate_run_id(self, request_id: str) -> int:
        return await runs.allocate_run_id(self, request_id)

    # --- specs -----------------------------------------------------------------------

    async def build_spec(
        self,
        command: str,
        *,
        cwd: Path | None = None,
        request_id: str | None = None,
        warn: Warn | None = None,
        **args: Any,
    ) -> RunSpec:
        """The spec `run` would start (code packaged, secrets kept), nothing started;
        `submit` starts it."""
        ra = RunArgs(**args)
        return await specs.build_spec(self, command, ra, cwd=cwd, request_id=request_id, warn=warn)

    def machine_type(self, name: str | None) -> MachineType:
        """The catalog's machine type (the default for None); UsageError if unknown."""
        return specs.machine_type(self, name)

    def environment(self, *, warn: Warn | None = None, **args: Any) -> EnvSpec:
        return specs.environment_spec(self, RunArgs(**args), warn)

    @property
    def frameworks(self) -> dict[str, Framework]:
        return specs.frameworks(self)

    # --- pipelines -------------------------------------------------------------------

    async def pipeline(
        self,
        steps: Sequence[Step],
        *,
        name: str = "",
        cwd: Path | None = None,
        warn: Warn | None = None,
    ) -> AsyncPipeline:
        """Start a pipeline of Steps (conjure.Step)."""
        from conjure.cli import pipelines

        return await pipelines.run_pipeline(self, steps, name=name, cwd=cwd, warn=warn)

    async def get_pipeline(self, pipeline_id: int) -> AsyncPipeline:
        from conjure.cli import pipelines

        return await pipelines.get_pipeline(self, pipeline_id)

    async def resume_pipeline(self, pipeline_id: int) -> tuple[AsyncPipeline, list[str]]:
        from conjure.cli import pipelines

        return await pipelines.resume_pipeline(self, pipeline_id)

    # --- the pool --------------------------------------------------------------------

    async def ensure_pool(self) -> None:
        await pools.ensure_pool(self)

    async def pool(self) -> PoolView:
        return await pools.pool_view(self)

    @overload
    async def queue_positions(self) -> dict[str, int]: ...
    @overload
    async def queue_positions(self, quick: bool) -> dict[str, int] | None: ...

    async def queue_positions(self, quick: bool = False) -> dict[str, int] | None:
        return await pools.queue_positions(self, quick)

    async def pool_view(self) -> PoolView | None:
        """The pool's machines and queue, or None when no pool has started (reads only)."""
        return await pools.view_if_started(self)

    async def terminate_machine(
        self, machine_id: str, force: bool = False
    ) -> TerminateMachineResult:
        return await pools.terminate_machine(self, machine_id, force)

    # --- resources -------------------------------------------------------------------

    def ls(self, path: str = "") -> list[Entry]:
        return resources.listing(self.store, path)

    def cp(self, resource: str, dest: Path) -> int:
        return resources.download(self.store, resource, dest).bytes

    def upload(self, local: Path, name: str | None = None) -> resources.Transfer:
        return resources.upload(self.store, local, name)

    def rm(self, resource: str) -> resources.Transfer:
        return resources.remove(self.store, resource)
