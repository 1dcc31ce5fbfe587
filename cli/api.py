"""Conjure's Python API. The `conjure` command is a thin shell over it.

    from conjure.cli.api import Conjure
    c = Conjure()
    run = c.run("python train.py", machine_type="cpu", mounts=["runs/12/out:/mnt/data"])
    print(run.id, run.wait().state)

`AsyncConjure` is the same API for asyncio code.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from conjure.cli import listing, resources
from conjure.cli.checks import check_value, check_values
from conjure.cli.code import package_code, package_github, run_diff
from conjure.cli.listing import RunFilter, RunsPage, RunSummary
from conjure.cli.liveness import query_or_none, query_with_liveness
from conjure.cli.mounts import parse_mount
from conjure.infra import environment, stack
from conjure.infra.catalog import UnknownMachineType, load_catalog, lookup
from conjure.infra.config import Settings, get_settings
from conjure.infra.counters import allocate
from conjure.infra.errors import ConjureError, RunFailedError, UsageError
from conjure.infra.logs import LogLine, LogReader
from conjure.infra.metrics import Point, read_metrics
from conjure.infra.pool_config import configure_pool
from conjure.infra.secrets import REDACTED, SECRETS_ROOT, is_secret, split_env, store_secrets
from conjure.infra.store import Entry, Store, StoreError, open_source, open_store
from conjure.infra.temporal import ServerUnreachable, make_client
from conjure.workflows import keys
from conjure.workflows.models import (
    EnvSpec,
    MachineType,
    MountSpec,
    PoolView,
    RunInput,
    RunOptions,
    RunSpec,
    RunState,
    RunStatus,
    TerminateMachineRequest,
    TerminateMachineResult,
)
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.run import RunWorkflow
from conjure.workflows.run_outcome import shown_state, status_of
from conjure.workflows.stop_conditions import StopCondition, StopRequest, parse_stop_condition


def check_docker(settings: Settings) -> None:
    """The local provider needs a Docker engine on this host."""
    if settings.provider != "local":
        return
    from conjure.infra.docker_ping import ping

    try:
        ping(settings.docker_host)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConjureError(
            f"the Docker engine is not reachable ({first[:160]}); start it "
            "(./install.sh does) or set DOCKER_HOST"
        ) from None


def check_local_image(settings: Settings, image: str) -> None:
    """--docker-image on the local provider: present or pullable, with a shell and Python."""
    import docker

    from conjure.infra import env_build

    client = (
        docker.DockerClient(base_url=settings.docker_host)
        if settings.docker_host
        else docker.from_env()
    )
    if not env_build.image_exists(client, image):
        reason = env_build.try_pull(client, image, lambda line: None)
        if reason is not None:
            raise UsageError(
                f"--docker-image: {image} is neither on this machine nor pullable: {reason}"
            )
    try:
        env_build.check_custom_image(client, image)
    except env_build.EnvError as e:
        raise UsageError(f"--docker-image: {e}") from None


def parse_stop_conditions(texts: Sequence[str]) -> list[StopCondition]:
    """`--stop-condition` values; a malformed one is a UsageError (exit 2)."""
    out = []
    for text in texts:
        try:
            out.append(parse_stop_condition(text))
        except ValueError as e:
            raise UsageError(f"--stop-condition: {e}") from None
    return out


class AsyncRun:
    """A handle on one run."""

    def __init__(self, conjure: AsyncConjure, run_id: int) -> None:
        self._c = conjure
        self.id = run_id

    @property
    def workflow_id(self) -> str:
        return keys.run_workflow_id(self.id)

    async def _handle(self) -> WorkflowHandle[Any, Any]:
        return (await self._c.client()).get_workflow_handle(self.workflow_id)

    async def status(self) -> RunStatus:
        handle = await self._handle()
        try:
            st: RunStatus = await query_with_liveness(
                await self._c.client(),
                self._c.settings.control_task_queue,
                lambda timeout: handle.query(RunWorkflow.status, rpc_timeout=timeout),
            )
            if not st.state.final:  # its workflow may have been terminated from outside
                closed = (await handle.describe()).status
                if closed is not None and closed != WorkflowExecutionStatus.RUNNING:
                    st.reason = (
                        f"its workflow was {closed.name.lower().replace('_', ' ')} "
                        f"(Temporal Web UI or CLI) while it was {st.state.value}"
                    )
                    st.state = RunState(shown_state(st.state.value, closed.name))
            return st
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise ConjureError(f"run {self.id} does not exist") from None
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
                raise ConjureError(f"run {self.id} does not exist") from None
            raise
        if check and st.state != RunState.COMPLETE:
            reason = f": {st.reason}" if st.reason else ""
            raise RunFailedError(f"run {self.id} {st.state.value}{reason}", st)
        return st

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
        returns the status it had. A finished run is a ConjureError."""
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
            raise ConjureError(f"run {self.id} is already {st.state.value}")
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


class AsyncConjure:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True) -> None:
        self.settings = settings or get_settings()
        self.autostart = autostart
        self._client: Client | None = None
        self._store: Store | None = None
        self._catalog: dict[str, MachineType] | None = None
        self.started_stack: stack.UpReport | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            try:
                self._store = open_store(self.settings.store, self.settings)
            except StoreError as e:
                raise ConjureError(str(e)) from None
        return self._store

    @property
    def catalog(self) -> dict[str, MachineType]:
        if self._catalog is None:
            self._catalog = load_catalog(self.settings.home / "config.toml")
        return self._catalog

    async def client(self) -> Client:
        if self._client is None:
            if self.autostart and self.settings.embedded:
                self.started_stack = await stack.ensure_up(self.settings)
            try:
                self._client = await make_client(self.settings)
            except ServerUnreachable as e:
                hint = " (start it with `conjure up`)" if self.settings.embedded else ""
                raise ConjureError(f"{e}{hint}") from None
        return self._client

    def machine_type(self, name: str | None) -> MachineType:
        check_value("machine_type", name)  # '' is a mistake, not the default
        try:
            return lookup(name or self.settings.default_machine_type, self.catalog)
        except UnknownMachineType as e:
            raise UsageError(str(e)) from None

    async def ensure_pool(self) -> None:
        """Start the pool if needed; settings given explicitly here reach the running pool."""
        await configure_pool(await self.client(), self.settings, authoritative=False)

    async def allocate_run_id(self, request_id: str) -> int:
        result = await allocate(
            await self.client(),
            keys.COUNTER_WORKFLOW_ID,
            self.settings.control_task_queue,
            request_id,
        )
        return result.run_id

    async def run(
        self,
        command: str,
        *,
        machine_type: str | None = None,
        mounts: Sequence[str] | Mapping[str, str] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        request_id: str | None = None,
        warn: Any = None,
        github_url: str | None = None,
        github_ref: str | None = None,
        commit_ref: str | None = None,
        stop_conditions: Sequence[str] = (),
        auto_resume: int = 0,
        spot_fallback: int = 0,
        code_dir: Path | str | None = None,
        **env_flags: Any,
    ) -> AsyncRun:
        """Validate, package the code, allocate an ID and start the run workflow.

        mounts: strings `SRC[:DEST]`, or a dict `{SRC: DEST}` as Spell took them
        (`{"runs/12/input.txt": "/data/input.txt"}`); code_dir: the directory whose git
        repository is the run's code (and whose place in it the working directory), instead
        of the process's working directory.

        auto_resume N: a run whose machine is reclaimed or lost goes on, from the files it
        saved so far, on a new machine, up to N attempts in all; spot_fallback K: after K
        interruptions its next attempts ask for the machine type on demand."""
        conditions = parse_stop_conditions(stop_conditions)  # malformed: exit 2, nothing started
        if auto_resume < 0 or spot_fallback < 0:
            raise UsageError("--auto-resume and --spot-fallback take a number of at least 0")
        if spot_fallback and auto_resume < 2:
            raise UsageError("--spot-fallback needs --auto-resume (of 2 attempts or more)")
        if code_dir is not None:
            cwd = Path(code_dir).expanduser()
            if not cwd.is_dir():
                raise UsageError(f"code_dir {code_dir}: no such directory")
        spec = await self.build_spec(
            command,
            machine_type=machine_type,
            mounts=mounts,
            env=env,
            cwd=cwd,
            request_id=request_id,
            warn=warn,
            github_url=github_url,
            github_ref=github_ref,
            commit_ref=commit_ref,
            **env_flags,
        )
        spec.auto_resume, spec.spot_fallback = auto_resume, spot_fallback
        return await self.submit(spec, self.run_options(), stop_conditions=conditions)

    def run_options(self) -> RunOptions:
        return RunOptions(
            registry=self.settings.registry,
            base_image=self.settings.base_image,
            log_lines_per_window=self.settings.log_lines_per_window,
            log_window_seconds=self.settings.log_window_seconds,
            stop_grace_seconds=self.settings.stop_grace_seconds,
            execute_heartbeat_seconds=self.settings.execute_heartbeat_seconds,
            hardware_metrics_seconds=self.settings.hardware_metrics_seconds,
            checkpoint_sync_seconds=self.settings.checkpoint_sync_seconds,
        )

    async def build_spec(
        self,
        command: str,
        *,
        machine_type: str | None = None,
        mounts: Sequence[str] | Mapping[str, str] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        request_id: str | None = None,
        warn: Any = None,
        github_url: str | None = None,
        github_ref: str | None = None,
        commit_ref: str | None = None,
        step_refs: set[str] | None = None,
        code: Any = None,
        apt: Sequence[str] = (),
        pip: Sequence[str] = (),
        pip_req: Path | str | None = None,
        conda_file: Path | str | None = None,
        docker_image: str | None = None,
        framework: str | None = None,
        deps_from_env: bool = False,
    ) -> RunSpec:
        """Validate, package the code and keep the secrets: the spec of one run.

        step_refs: in a pipeline, the step names a mount may name as `{steps.NAME}`.
        code: an already packaged CodeSpec (pipelines package the code once).
        """
        if not command or not command.strip():
            raise UsageError("the command is empty")
        check_values(
            machine_type=machine_type, mount=mounts, github_url=github_url,
            github_ref=github_ref, commit_ref=commit_ref, apt=apt, pip=pip,
            pip_req=None if pip_req is None else str(pip_req),
            conda_file=None if conda_file is None else str(conda_file),
            docker_image=docker_image, framework=framework,
        )  # fmt: skip
        mtype = self.machine_type(machine_type)
        env = dict(env or {})
        for name in env:
            if (
                not name
                or not (name[0].isalpha() or name[0] == "_")
                or not all(ch.isalnum() or ch == "_" for ch in name)
            ):
                raise UsageError(f"--env: {name!r} is not a valid variable name")
        env_spec = self.environment(
            apt=apt, pip=pip, pip_req=pip_req, conda_file=conda_file, docker_image=docker_image,
            framework=framework, deps_from_env=deps_from_env, warn=warn,
        )  # fmt: skip
        if self.settings.provider == "local":
            check_docker(self.settings)
            if env_spec.docker_image:
                check_local_image(self.settings, env_spec.docker_image)
        await self.client()  # unreachable server: fail before uploading anything
        if code is None:
            code = self.package(
                cwd, github_url=github_url, github_ref=github_ref, commit_ref=commit_ref,
                warn=warn,
            )  # fmt: skip
        mount_specs = self.parse_mounts(mounts, code, step_refs=step_refs)
        request_id = request_id or uuid.uuid4().hex
        shown, secret = split_env(env)
        secrets_key = store_secrets(self.store, request_id, secret)
        return RunSpec(
            command=command,
            machine_type=mtype,
            code=code,
            mounts=mount_specs,
            env=shown,
            request_id=request_id,
            secrets_key=secrets_key,
            environment=env_spec,
        )

    def package(
        self,
        cwd: Path | None = None,
        *,
        github_url: str | None = None,
        github_ref: str | None = None,
        commit_ref: str | None = None,
        warn: Any = None,
    ) -> Any:
        """The run's code: the working tree, a commit of it, or a git URL."""
        check_values(github_url=github_url, github_ref=github_ref, commit_ref=commit_ref)
        if github_url and commit_ref:
            raise UsageError("--github-url and --commit-ref cannot be combined")
        if github_ref and not github_url:
            raise UsageError("--github-ref needs --github-url")
        if github_url:
            packaged = package_github(self.store, github_url, github_ref)
        else:
            packaged = package_code(
                self.store,
                cwd or Path.cwd(),
                include_uncommitted=self.settings.include_uncommitted,
                commit_ref=commit_ref,
            )
        for w in packaged.warnings:
            if warn:
                warn(w)
        return packaged.code

    def parse_mounts(
        self,
        mounts: Sequence[str] | Mapping[str, str],
        code: Any,
        *,
        step_refs: set[str] | None = None,
    ) -> list[MountSpec]:
        from conjure.workflows.pipeline_models import step_ref

        if isinstance(mounts, Mapping):  # Spell's {SRC: DEST}
            mounts = [f"{src}:{dest}" if dest else str(src) for src, dest in mounts.items()]
        elif isinstance(mounts, str):
            mounts = [mounts]  # one mount, not its characters

        workdir = (
            "/conjure"
            + (f"/{code.repo_name}" if code.repo_name else "")
            + (f"/{code.relative_cwd}" if code.relative_cwd else "")
        )
        mount_specs = []
        for text in mounts:
            ref = step_ref(text.strip())
            if ref is not None and step_refs is not None:
                if ref[0] not in step_refs:
                    raise UsageError(f"--mount {text!r}: there is no step {ref[0]!r}")
                # Parse as a run's output, then put the step reference back.
                prefix = f"{{steps.{ref[0]}}}"
                m = parse_mount("runs/0" + text.strip()[len(prefix) :], workdir)
                m.source = prefix + m.source[len("runs/0") :]
                mount_specs.append(m)
                continue
            m = parse_mount(text, workdir)
            try:
                found = open_source(m.source, self.store, self.settings)[2]
            except StoreError as e:
                raise UsageError(f"--mount: {e}") from None
            if not found:
                raise UsageError(f"--mount: {m.source} does not exist")
            mount_specs.append(m)
        dests = [m.dest for m in mount_specs]
        if len(set(dests)) != len(dests):
            raise UsageError("--mount: two mounts have the same destination")
        return mount_specs

    async def rerun(
        self,
        run_id: int,
        command: str | None = None,
        *,
        machine_type: str | None = None,
        mounts: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        github_url: str | None = None,
        github_ref: str | None = None,
        commit_ref: str | None = None,
        cwd: Path | None = None,
        warn: Any = None,
    ) -> AsyncRun:
        """A new run with run_id's spec; flags given here override it.

        Secret values are not kept for reruns: a SECRET* variable that is not given
        again is `<REDACTED>` in the new run (as Spell does)."""
        check_values(
            machine_type=machine_type, mount=mounts, github_url=github_url,
            github_ref=github_ref, commit_ref=commit_ref,
        )  # fmt: skip
        old = (await AsyncRun(self, run_id).status()).spec
        merged = {**old.env, **(env or {})}
        missing = [k for k, v in merged.items() if is_secret(k) and v == REDACTED]
        if missing and warn:
            warn(
                f"{', '.join(missing)} not given again: the new run gets <REDACTED> "
                "(pass --env NAME=VALUE to set it)"
            )
        given = {k: v for k, v in merged.items() if not (is_secret(k) and v == REDACTED)}
        if github_url or commit_ref:
            code = self.package(
                cwd, github_url=github_url, github_ref=github_ref, commit_ref=commit_ref,
                warn=warn,
            )  # fmt: skip
        else:
            if github_ref:
                raise UsageError("--github-ref needs --github-url")
            code = old.code
        if mounts is None:
            mount_texts = [f"{m.source}:{m.dest}" for m in old.mounts]
        else:
            mount_texts = list(mounts)
        spec = await self.build_spec(
            command or old.command,
            machine_type=machine_type or old.machine_type.name,
            mounts=mount_texts,
            env=given,
            code=code,
        )
        spec.env.update(dict.fromkeys(missing, REDACTED))
        spec.environment = old.environment
        return await self.submit(spec, self.run_options())

    def environment(
        self,
        *,
        apt: Sequence[str] = (),
        pip: Sequence[str] = (),
        pip_req: Path | str | None = None,
        conda_file: Path | str | None = None,
        docker_image: str | None = None,
        framework: str | None = None,
        deps_from_env: bool = False,
        warn: Any = None,
    ) -> EnvSpec:
        """Validate the environment flags and name the image (UsageError on a bad value)."""
        local = environment.deps_from_env() if deps_from_env else None
        if local is not None and warn:
            n = len(local.pip)
            what = f"{n} package(s)" if local.pip else "a conda environment file"
            warn(f"--deps-from-env: {what} from the {local.source}")
        return environment.build_env_spec(
            base_image=self.settings.base_image,
            docker_image=docker_image,
            framework=framework,
            apt=apt,
            pip=pip,
            pip_req=Path(pip_req) if pip_req else None,
            conda_file=Path(conda_file) if conda_file else None,
            local=local,
            frameworks=self.frameworks,
            registry=self.settings.registry,
            ca_digest=environment.file_digest(self.settings.ca_bundle_path),
        )

    @property
    def frameworks(self) -> dict[str, environment.Framework]:
        try:
            return environment.load_frameworks(self.settings.home / "config.toml")
        except UsageError as e:
            raise ConjureError(f"the framework catalog is invalid: {e}") from None

    async def submit(
        self,
        spec: RunSpec,
        options: RunOptions | None = None,
        stop_conditions: Sequence[StopCondition] = (),
    ) -> AsyncRun:
        client = await self.client()
        # Two round trips at once: the pool exists (and has this client's settings)
        # before the run is started, the run id comes from the counter.
        _, run_id = await asyncio.gather(self.ensure_pool(), self.allocate_run_id(spec.request_id))
        try:
            await client.start_workflow(
                RunWorkflow.run,
                RunInput(
                    run_id=run_id,
                    spec=spec,
                    options=options or RunOptions(),
                    stop_conditions=list(stop_conditions),
                ),
                id=keys.run_workflow_id(run_id),
                task_queue=self.settings.control_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(keys.RUN_ID, run_id),
                        SearchAttributePair(keys.STATE, RunState.REQUESTED.value),
                        SearchAttributePair(keys.MACHINE_TYPE, spec.machine_type.name),
                        SearchAttributePair(keys.COMMAND, spec.command[:2000]),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            pass  # a retried submission whose run already finished: same run, not a second one
        return AsyncRun(self, run_id)

    async def get(self, run_id: int) -> AsyncRun:
        run = AsyncRun(self, run_id)
        await run.status()
        return run

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
        return (
            await self.runs_page(
                RunFilter(state=state or "", machine_type=machine_type, text=text),
                limit=limit,
                before=before,
            )
        ).runs

    async def runs_page(
        self, flt: RunFilter | None = None, *, limit: int = 50, before: int | None = None
    ) -> RunsPage:
        """A page of runs and the `before` of the next one; Requested runs get their
        place in the queue."""
        page = await listing.runs_page(await self.client(), flt, limit=limit, before=before)
        if any(r.state == RunState.REQUESTED.value for r in page.runs):
            positions = await self.queue_positions(quick=True)
            for r in page.runs:
                if positions is None:  # no control worker answered: places unknown
                    r.queue_unknown = r.state == RunState.REQUESTED.value
                else:
                    r.queue_position = positions.get(keys.run_workflow_id(r.run_id))
        return page

    @overload
    async def queue_positions(self) -> dict[str, int]: ...
    @overload
    async def queue_positions(self, quick: bool) -> dict[str, int] | None: ...

    async def queue_positions(self, quick: bool = False) -> dict[str, int] | None:
        """Run workflow id -> place in the pool's queue (1 = next). quick: None when no
        control worker answers at once (never waits on a dead one)."""
        pool = (await self.client()).get_workflow_handle(keys.POOL_WORKFLOW_ID)
        view = await query_or_none(lambda t: pool.query(PoolWorkflow.view, rpc_timeout=t))
        if view is None:
            return None if quick else {}
        return {q.run_workflow_id: i for i, q in enumerate(view.queue, start=1)}

    async def terminate_machine(
        self, machine_id: str, force: bool = False
    ) -> TerminateMachineResult:
        client = await self.client()
        await self.ensure_pool()
        handle = client.get_workflow_handle(keys.POOL_WORKFLOW_ID)
        try:
            return await handle.execute_update(
                PoolWorkflow.terminate_machine,
                TerminateMachineRequest(machine_id=machine_id, force=force),
            )
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            msg = getattr(cause, "message", None) or str(cause or e)
            raise ConjureError(msg) from None

    async def pool(self) -> PoolView:
        client = await self.client()
        await self.ensure_pool()
        return await client.get_workflow_handle(keys.POOL_WORKFLOW_ID).query(PoolWorkflow.view)

    async def pool_view(self) -> PoolView | None:
        """The pool's machines and queue, or None when no pool has started (reads only)."""
        handle = (await self.client()).get_workflow_handle(keys.POOL_WORKFLOW_ID)
        try:
            return await handle.query(PoolWorkflow.view)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    # --- resources ------------------------------------------------------------------

    def ls(self, path: str = "") -> list[Entry]:
        return resources.listing(self.store, path)

    def cp(self, resource: str, dest: Path) -> int:
        if resource.strip("/").split("/", 1)[0] == SECRETS_ROOT:
            raise ConjureError("secrets are not readable through the CLI")
        return resources.download(self.store, resource, dest).bytes

    def upload(self, local: Path, name: str | None = None) -> resources.Transfer:
        return resources.upload(self.store, local, name)

    def rm(self, resource: str) -> resources.Transfer:
        return resources.remove(self.store, resource)


class Run:
    """Synchronous handle on one run (see AsyncRun)."""

    def __init__(self, conjure: Conjure, inner: AsyncRun) -> None:
        self._c = conjure
        self._inner = inner
        self.id = inner.id

    def status(self) -> RunStatus:
        return self._c._sync(self._inner.status())

    def wait(self, *, check: bool = False, state: RunState | str | None = None) -> RunStatus:
        return self._c._sync(self._inner.wait(check=check, state=state))

    def wait_status(self, *states: RunState | str) -> RunStatus:
        return self._c._sync(self._inner.wait_status(*states))

    def diff(self) -> bytes | None:
        return self._c._sync(self._inner.diff())

    def stop(self, grace_seconds: float | None = None) -> RunStatus:
        return self._c._sync(self._inner.stop(grace_seconds))

    def metric_series(self) -> dict[str, list[Point]]:
        return self._inner.metric_series()

    def kill(self) -> RunStatus:
        return self._c._sync(self._inner.kill())

    def outputs(self) -> list[Entry]:
        return self._inner.outputs()

    def metrics(self) -> list[dict[str, Any]]:
        return self._inner.metrics()

    def logs(self, follow: bool = False, *, program_only: bool = False) -> Iterator[LogLine]:
        agen = self._inner.logs(follow=follow, program_only=program_only)
        while True:
            try:
                yield self._c._sync(agen.__anext__())
            except StopAsyncIteration:
                return


class Conjure:
    """Synchronous API: `Conjure().run("python train.py").wait()`."""

    def __init__(self, settings: Settings | None = None, *, autostart: bool = True) -> None:
        # Its own event loop on a thread: works in plain scripts and where a loop is
        # already running (Jupyter, async code) alike.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.aio = AsyncConjure(settings, autostart=autostart)

    def _sync(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run(self, command: str, **kwargs: Any) -> Run:
        return Run(self, self._sync(self.aio.run(command, **kwargs)))

    def get(self, run_id: int) -> Run:
        return Run(self, self._sync(self.aio.get(run_id)))

    def rerun(self, run_id: int, command: str | None = None, **kwargs: Any) -> Run:
        return Run(self, self._sync(self.aio.rerun(run_id, command, **kwargs)))

    def pipeline(self, steps: Sequence[Any], *, name: str = "", **kwargs: Any) -> Any:
        """Start a pipeline of `Step`s (cli.pipelines.Step); returns a Pipeline handle."""
        from conjure.cli.pipelines import Pipeline, run_pipeline

        return Pipeline(self, self._sync(run_pipeline(self.aio, steps, name=name, **kwargs)))

    def get_pipeline(self, pipeline_id: int) -> Any:
        from conjure.cli.pipelines import Pipeline, get_pipeline

        return Pipeline(self, self._sync(get_pipeline(self.aio, pipeline_id)))

    def hyper(self, kind: str, command: str, params: Any, **kwargs: Any) -> Any:
        """Start a hyperparameter search (cli/hyper.py): kind grid, random or bayes;
        returns a Hyper handle (status, wait, stop)."""
        from conjure.cli.hyper import Hyper, start_hyper

        return Hyper(self, self._sync(start_hyper(self.aio, kind, command, params, **kwargs)))

    def hyper_grid(self, command: str, params: Any, **kwargs: Any) -> Any:
        return self.hyper("grid", command, params, **kwargs)

    def hyper_random(self, command: str, params: Any, num_runs: int, **kwargs: Any) -> Any:
        return self.hyper("random", command, params, num_runs=num_runs, **kwargs)

    def hyper_bayes(self, command: str, params: Any, num_runs: int, **kwargs: Any) -> Any:
        return self.hyper("bayes", command, params, num_runs=num_runs, **kwargs)

    def get_hyper(self, hyper_id: int) -> Any:
        from conjure.cli.hyper import Hyper, get_hyper

        return Hyper(self, self._sync(get_hyper(self.aio, hyper_id)))

    def list_runs(self, limit: int = 50) -> list[RunSummary]:
        return self._sync(self.aio.list_runs(limit))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Conjure:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
