"""Machine-local activities: run on the worker agent of the leased machine.

Each run has a folder on the machine, `runs/<N>/`, whose `ws/` is bound into the
container at /conjure. Code lands in `ws/<repo>/`, the command runs in the user's
directory inside it, and what the command writes there is saved to `runs/<N>/`
in the store afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import Mount
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from conjure.activities.resources import (
    MountError,
    mount_all,
    mount_writes,
    overlay_mount,
    remove_volumes,
)
from conjure.activities.run_control import (
    HALT_FILE,
    container_sampler,
    log_tail_details,
    read_halt,
    write_halt,
)
from conjure.infra import env_build
from conjure.infra.base_image import ensure_base_image
from conjure.infra.config import Settings
from conjure.infra.installation import installation_id
from conjure.infra.logs import LogWriter, RateLimiter, stored_until
from conjure.infra.metrics import MetricsPump, Point, ensure_file, restore_metrics_file
from conjure.infra.providers.local import MACHINE_LABEL
from conjure.infra.secrets import load_secrets, shell_exports
from conjure.infra.store import Store, StoreError
from conjure.workflows.activity_defs import MachineActivityDefs
from conjure.workflows.models import (
    CleanupInput,
    EnvInput,
    EnvResult,
    ExecuteInput,
    ExecuteResult,
    MachineInfo,
    MachineReadyInput,
    MountInput,
    MountResult,
    PrepareInput,
    PrepareResult,
    PushInput,
    PushResult,
    SaveInput,
    SaveResult,
    SignalContainerInput,
)
from conjure.workflows.stop_condition_workflow import StopConditionWorkflow
from conjure.workflows.stop_conditions import MetricBatch, MetricPoint

CONTAINER_ROOT = "/conjure"
RUN_LABEL = "org.conjure.run"
IMAGE_LABEL = "org.conjure.env"
# Bound read-write into every run: the metrics file and the helper module's folder.
CONTAINER_META = "/run/conjure"
# A run's secret values: a file of `export NAME='value'` lines the wrapper sources, kept
# on the host's tmpfs and bound read-only, so they never sit in the container's config
# (`docker inspect`) nor on a disk.
CONTAINER_SECRETS = "/run/conjure-secrets.sh"
SECRETS_TMPFS = Path("/dev/shm")
# How long an exited container's remaining output may take to read (a log flood).
DRAIN_SECONDS = 600

# The command runs under Docker's init (tini, PID 1: reaps zombies, forwards signals)
# and this shell, which runs it in its own session and passes SIGTERM/SIGINT on to that
# whole process group, then waits while any process of it is still finishing (a
# trainer writing its last checkpoint), so `conjure stop` reaches every process of
# `sh -c "…"` and not just the shell. $1 is the user's command. The shell running it
# traps TERM/INT to exit with the status of the command it was waiting for, so a
# stopped run records the program's own exit code (not the shell's 143) and the next
# command of a `a; b` line does not start. A shell waiting on a program that a signal
# ends prints `Terminated` (dash does, trap or not), so a line that is one program
# ($2 names it: see exec_word) whose name is a file on PATH (not a builtin) is run with
# `exec`: the shell becomes the program, and its log holds only what the program printed
# (this shell's own `wait`s print their job notes to /dev/null).
# Images without `python`/`pip` but with `python3` get them from the shims in
# CONTAINER_META/bin, last on PATH.
RUN_WRAPPER = r"""
if [ -r /run/conjure-secrets.sh ]; then . /run/conjure-secrets.sh; fi
export PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}:/run/conjure/bin"
case "$(command -v -- "${2:-:}")" in
  /*) setsid sh -c 'exec '"$1" & ;;
  *) setsid sh -c 'trap "exit \$?" TERM INT; '"$1" & ;;
esac
child=$!
trap 'kill -TERM -"$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT -"$child" 2>/dev/null || kill -INT "$child" 2>/dev/null' INT
wait "$child" 2>/dev/null; rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child" 2>/dev/null; rc=$?; done
while kill -0 -"$child" 2>/dev/null; do sleep 0.1; done
exit "$rc"
"""
# Shims for images whose Python 3 is only `python3` (found after the image's own).
PYTHON_SHIMS = {
    "python": '#!/bin/sh\nexec python3 "$@"\n',
    "pip": '#!/bin/sh\nexec python3 -m pip "$@"\n',
}


# Tokens of a line that make it more than one simple command (shlex splits them out).
_CONTROL = re.compile(r"[;&|()]")


def exec_word(command: str) -> str:
    """The program a command line runs when the line is one simple command (words and
    redirections: no list, pipe, subshell, newline, leading assignment or expansion in
    its first word), else "". The wrapper runs such a line with `exec`."""
    if "\n" in command.strip():
        return ""
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: the shell says what is wrong
        return ""
    for tok in tokens:
        if _CONTROL.search(tok) and tok[0] not in "<>" and set(tok) <= set(lex.punctuation_chars):
            return ""
    first = tokens[0] if tokens else ""
    if not first or first[0] in "<>" or any(c in first for c in "=$`*?[~{\\'\""):
        return ""
    return first


class _NotStarted(Exception):
    """Docker refused to start the run's container (a bad mount, an exec error)."""


def _user_error(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def parse_docker_ts(ts: str) -> int:
    """RFC 3339 with up to nanoseconds (as `docker logs --timestamps` prints) to ns."""
    main, _, frac = ts.rstrip("Z").partition(".")
    secs = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(secs) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


class MachineActivities(MachineActivityDefs):
    def __init__(
        self,
        settings: Settings,
        machine_id: str,
        store: Store,
        docker_client: docker.DockerClient,
        machine_dir: Path,
        signal_workflow: Callable[[str, Callable[..., Any], object], bool] | None = None,
    ) -> None:
        self.settings = settings
        # signal_workflow(workflow_id, signal method, arg) -> False when that workflow is gone.
        self.signal_workflow = signal_workflow
        self.machine_id = machine_id
        self.store = store
        self.docker = docker_client
        self.dir = machine_dir
        self.host_cpus = os.cpu_count() or 1
        self.host_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    # --- paths ----------------------------------------------------------------------

    def run_dir(self, run_id: int) -> Path:
        return self.dir / "runs" / str(run_id)

    def workspace(self, run_id: int) -> Path:
        return self.run_dir(run_id) / "ws"

    def host_path(self, run_id: int, container_path: str) -> Path:
        """The host path of a container path below /conjure."""
        rel = PurePosixPath(container_path).relative_to(CONTAINER_ROOT)
        return self.workspace(run_id) / rel

    def container_name(self, run_id: int) -> str:
        return f"conjure-{self.machine_id}-run-{run_id}"

    # --- readiness ------------------------------------------------------------------

    @activity.defn(name="machine_ready")
    def machine_ready(self, inp: MachineReadyInput) -> MachineInfo:
        if inp.machine_id != self.machine_id:
            raise _user_error(
                f"this agent is {self.machine_id}, not {inp.machine_id}", "WrongMachine"
            )
        self.docker.ping()
        images = [
            tag
            for img in self.docker.images.list(filters={"label": IMAGE_LABEL})
            for tag in img.tags
        ]
        return MachineInfo(machine_id=self.machine_id, ready=True, images=images)

    # --- Building -------------------------------------------------------------------

    @activity.defn(name="prepare_workspace")
    def prepare_workspace(self, inp: PrepareInput) -> PrepareResult:
        with _heartbeat_while_running(every=5.0):
            return self._prepare_workspace(inp)

    def _prepare_workspace(self, inp: PrepareInput) -> PrepareResult:
        # A run workflow reset from the Temporal Web UI takes its steps again: what an
        # earlier pass of this run left on the machine (its container, result, halt) goes.
        if self.docker is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.docker.containers.get(self.container_name(inp.run_id)).remove(force=True)
        for leftover in ("exec-result.json", HALT_FILE):
            (self.run_dir(inp.run_id) / leftover).unlink(missing_ok=True)
        ws = self.workspace(inp.run_id)
        if ws.exists():
            shutil.rmtree(ws)  # a retried attempt starts clean
        ws.mkdir(parents=True)
        code = inp.code
        repo_root = ws / code.repo_name if code.repo_name else ws
        repo_root.mkdir(parents=True, exist_ok=True)
        if code.git_key and code.commit:
            checkout(self._cached_code(code.git_key), repo_root, code.commit, code.branch)
        elif code.archive_key:  # a run submitted before runs were git checkouts
            archive = self._cached_code(code.archive_key)
            try:
                with tarfile.open(archive) as tar:
                    _extract_data(tar, repo_root)
            except (tarfile.TarError, ValueError) as e:  # FilterError is a TarError
                # Retrying cannot fix the archive: fail at once, saying it is the code.
                raise _user_error(
                    f"the code archive {code.archive_key} cannot be unpacked: {e}", "BadCode"
                ) from None
        if code.patch_key:
            patch = self._cached_code(code.patch_key)
            proc = subprocess.run(
                ["git", "apply", "--whitespace=nowarn", str(patch)],
                cwd=repo_root,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise _user_error(
                    f"the uncommitted changes do not apply: {proc.stderr.strip()}", "BadPatch"
                )
        rel = PurePosixPath(code.relative_cwd.strip("/")) if code.relative_cwd.strip("/") else None
        if rel is not None and (rel.is_absolute() or ".." in rel.parts):
            raise _user_error(f"bad working directory {code.relative_cwd!r}", "BadWorkdir")
        parts = (
            [CONTAINER_ROOT]
            + ([code.repo_name] if code.repo_name else [])
            + ([str(rel)] if rel else [])
        )
        workdir = str(PurePosixPath(*parts))
        host_workdir = self.host_path(inp.run_id, workdir)
        host_workdir.mkdir(parents=True, exist_ok=True)
        if inp.restore:  # a resumed attempt: go on from the files the last one saved
            self._restore(inp.run_id, host_workdir)
        manifest = {k: list(v) for k, v in _snapshot(host_workdir).items()}
        (self.run_dir(inp.run_id) / "manifest.json").write_text(json.dumps(manifest))
        return PrepareResult(workspace=str(ws), workdir=workdir)

    def _restore(self, run_id: int, host_workdir: Path) -> None:
        """The run's saved files (runs/<N>/) into its working directory, and its metrics
        file as far as the store has it, so metric counts go on where they stopped."""
        prefix = f"runs/{run_id}"
        for e in self.store.walk(prefix):
            rel = PurePosixPath(e.key[len(prefix) :].lstrip("/"))
            if e.is_dir or not rel.parts or ".." in rel.parts or rel.parts[0] == ".git":
                continue
            self.store.get_file(e.key, host_workdir / rel)
            activity.heartbeat()
        meta = self.run_dir(run_id) / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        restore_metrics_file(self.store, run_id, meta / "metrics.jsonl")

    def _cached_code(self, key: str) -> Path:
        """Code objects are content-addressed: download each once per machine."""
        path = self.dir / "cache" / "code" / PurePosixPath(key).name
        if not path.exists():
            try:
                self.store.get_file(key, path)
            except (StoreError, FileNotFoundError) as e:
                raise _user_error(
                    f"code object {key} is missing from the store: {e}", "NoCode"
                ) from e
        return path

    @activity.defn(name="ensure_environment")
    def ensure_environment(self, inp: EnvInput) -> EnvResult:
        writer = LogWriter(self.store, inp.run_id, "build")
        beat = _heartbeating(writer)
        tail: list[str] = []

        def log(line: str) -> None:
            tail.append(line)
            del tail[:-100]
            beat(line)

        try:

            def ensure_base() -> bool:
                try:
                    self.docker.images.get(inp.base_image)
                    return True
                except docker.errors.ImageNotFound:
                    writer.note(f"[conjure] building the base image {inp.base_image}")
                try:
                    ensure_base_image(
                        self.docker,
                        inp.base_image,
                        pull=self.settings.base_image_pull,
                        mirror=self.settings.debian_mirror,
                        ca_bundle=self.settings.ca_bundle_path,
                        cache_dir=self.settings.home / "cache",
                        log=log,
                    )
                except Exception as e:
                    raise ApplicationError(
                        f"building the base image failed: {e}",
                        log_tail_details(tail),
                        type="BuildFailed",
                        non_retryable=True,
                    ) from e
                return False

            try:
                with _heartbeat_while_running():
                    out = env_build.ensure_environment(
                        self.docker,
                        inp.spec,
                        base_image=inp.base_image,
                        ensure_base=ensure_base,
                        registry=inp.registry,
                        ca_bundle=self.settings.ca_bundle_path,
                        work_dir=self.dir / "cache" / "env",
                        log=log,
                        installation=installation_id(self.store),
                    )
            except env_build.EnvError as e:
                raise ApplicationError(
                    str(e), log_tail_details(tail), type="BuildFailed", non_retryable=True
                ) from e
            if out.source == "cached" and inp.spec.tag:
                writer.note(f"[conjure] environment cached: {out.image}")
            return EnvResult(
                image=out.image, cached=out.source == "cached", source=out.source, push=out.push
            )
        finally:
            writer.close()

    @activity.defn(name="push_environment")
    def push_environment(self, inp: PushInput) -> PushResult:
        writer = LogWriter(self.store, inp.run_id, "push")
        try:
            writer.note(f"[conjure] pushing {inp.image}")
            with _heartbeat_while_running():
                env_build.push_image(self.docker, inp.image, _heartbeating(writer))
            writer.note(f"[conjure] pushed {inp.image}")
            return PushResult(image=inp.image, pushed=True)
        except env_build.EnvError as e:
            # The run's result does not depend on the push: say so and go on.
            writer.note(f"[conjure] {e}")
            return PushResult(image=inp.image, pushed=False, detail=str(e))
        finally:
            writer.close()

    # --- Mounting -------------------------------------------------------------------

    @activity.defn(name="mount_resources")
    def mount_resources(self, inp: MountInput) -> MountResult:
        try:
            return mount_all(
                self.settings,
                self.store,
                self.dir,
                self.run_dir(inp.run_id),
                inp,
                activity.heartbeat,
            )
        except MountError as e:
            raise _user_error(str(e), "NoSuchResource") from e

    # --- Running --------------------------------------------------------------------

    @activity.defn(name="execute")
    def execute(self, inp: ExecuteInput) -> ExecuteResult:
        # One attempt on a run's container at a time: a retry that starts while an earlier
        # attempt still lives (its heartbeat timed out) waits for it, then takes its result.
        with self._run_lock(inp.run_id):
            return self._execute(inp)

    @contextlib.contextmanager
    def _run_lock(self, run_id: int) -> Iterator[None]:
        path = self.run_dir(run_id) / "execute.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        details = activity.info().heartbeat_details
        with open(path, "a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # Never empty: the workflow tells a re-attach that heartbeated (the
                    # machine lives) from one that never did (the machine is gone).
                    activity.heartbeat(*(details or [{}]))
                    if activity.is_cancelled():
                        raise CancelledError("the run was cancelled") from None
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _execute(self, inp: ExecuteInput) -> ExecuteResult:
        result_file = self.run_dir(inp.run_id) / "exec-result.json"
        if result_file.exists():  # finished before a crash lost the activity's result
            return ExecuteResult.model_validate_json(result_file.read_text())
        details = activity.info().heartbeat_details
        since: dict[str, int] = dict(details[0]) if details else {}
        if activity.info().attempt > 1 or inp.resume:
            # resumed: the store knows better than the last heartbeat
            for stream, t in stored_until(self.store, inp.run_id, "run").items():
                since[stream] = max(since.get(stream, 0), t)
        secrets = load_secrets(self.store, inp.spec.secrets_key)
        writer = LogWriter(
            self.store,
            inp.run_id,
            "run",
            RateLimiter(inp.options.log_lines_per_window, inp.options.log_window_seconds),
            redact=list(secrets.values()),
        )
        try:
            container = self._container(inp, secrets)
        except _NotStarted as e:
            # Docker's own words are the run's reason and its log's last line.
            writer.note(f"[conjure] {e}")
            writer.close()
            self._drop_secrets(inp.run_id)
            raise _user_error(str(e), "ContainerStart") from None
        followers = [
            threading.Thread(
                target=self._follow, args=(container.id, s, since.get(s, 0), writer), daemon=True
            )
            for s in ("o", "e")
        ]
        for follower in followers:
            follower.start()
        pump = self._metrics_pump(inp, container, writer).start()
        sync = CheckpointSync(self, inp, writer.note).start()
        applied: str | None = None
        try:
            while True:
                try:
                    status = container.wait(timeout=1)
                    break
                except (requests.exceptions.RequestException, ConnectionError):
                    pass
                activity.heartbeat({**since, **writer.last_flushed})
                applied = self._apply_halt(inp.run_id, container, applied)
                if activity.is_worker_shutdown():
                    # The agent is restarting (or its machine is going away): save what the
                    # run has so far, leave the container running; the retried attempt (on
                    # this agent's successor) picks it up again.
                    sync.close(final=True)
                    raise ApplicationError("agent shutting down", type="AgentShutdown")
                if activity.is_cancelled():
                    container.kill()
                    raise CancelledError("the run was cancelled")
            # Drain what the container printed, heartbeating: a flood can take longer to
            # read than the heartbeat timeout, and a timed-out attempt would be retried.
            drain_until = time.monotonic() + DRAIN_SECONDS
            while any(f.is_alive() for f in followers) and time.monotonic() < drain_until:
                for follower in followers:
                    follower.join(timeout=1)
                activity.heartbeat({**since, **writer.last_flushed})
        finally:
            sync.close()
            pump.close()
            writer.close()
        self._drop_secrets(inp.run_id)  # the wrapper read them when it started
        container.reload()
        state = container.attrs.get("State", {})
        result = ExecuteResult(
            exit_code=int(status.get("StatusCode", state.get("ExitCode", -1))),
            oom_killed=bool(state.get("OOMKilled")),
            log_lines=writer.lines,
            dropped_lines=writer.limiter.dropped_total if writer.limiter else 0,
        )
        result_file.write_text(result.model_dump_json())
        container.remove(force=True)
        return result

    def _metrics_pump(
        self, inp: ExecuteInput, container: Container, writer: LogWriter
    ) -> MetricsPump:
        forward = None
        if inp.metrics_workflow_id and inp.watch_metrics and self.signal_workflow is not None:
            signal = self.signal_workflow

            def forward(points: list[Point]) -> bool:
                batch = MetricBatch(
                    points=[
                        MetricPoint(name=p.name, value=p.value, index=p.index, step=p.step)
                        for p in points
                    ]
                )
                return signal(inp.metrics_workflow_id, StopConditionWorkflow.metrics, batch)

        return MetricsPump(
            store=self.store,
            run_id=inp.run_id,
            path=self.run_dir(inp.run_id) / "meta" / "metrics.jsonl",
            sample=container_sampler(self.docker.api, container.id)
            if inp.options.hardware_metrics_seconds > 0
            else None,
            sample_every=inp.options.hardware_metrics_seconds,
            forward=forward,
            watch=set(inp.watch_metrics),
            note=writer.note,
        )

    def _apply_halt(self, run_id: int, container: Container, applied: str | None) -> str | None:
        """Apply a stop/kill that `signal_container` recorded before the container existed."""
        halt = read_halt(self.run_dir(run_id))
        if halt is None or applied == "kill" or applied == halt[0]:
            return applied
        kind, grace = halt
        threading.Thread(target=self._signal, args=(container, kind, grace), daemon=True).start()
        return kind

    @staticmethod
    def _signal(container: Container, kind: str, grace: float) -> None:
        try:
            if kind == "kill":
                container.kill()
            else:
                container.stop(timeout=max(int(round(grace)), 0))
        except docker.errors.APIError:
            pass  # it exited meanwhile

    def _container(self, inp: ExecuteInput, secrets: dict[str, str] | None = None) -> Container:
        name = self.container_name(inp.run_id)
        try:
            found = self.docker.containers.get(name)
        except docker.errors.NotFound:
            pass
        else:
            if found.status != "created":
                return found  # running or exited: an earlier attempt started it
            # Created, never started (that attempt died between the two): start it now.
            try:
                found.start()
            except docker.errors.APIError as e:
                with contextlib.suppress(docker.errors.APIError):
                    found.remove(force=True)
                raise _NotStarted(f"the container did not start: {e.explanation or e}") from None
            return found
        meta = self.run_dir(inp.run_id) / "meta"
        lib = meta / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("conjure_metrics.py"), lib / "conjure_metrics.py")
        ensure_file(meta / "metrics.jsonl")
        shims = meta / "bin"
        shims.mkdir(exist_ok=True)
        for shim, text in PYTHON_SHIMS.items():
            (shims / shim).write_text(text)
            (shims / shim).chmod(0o755)
        labels = {MACHINE_LABEL: self.machine_id, RUN_LABEL: str(inp.run_id)}
        mounts = [
            Mount(CONTAINER_ROOT, inp.prepared.workspace, type="bind"),
            Mount(CONTAINER_META, str(meta), type="bind"),
        ] + [
            overlay_mount(self.docker, f"{name}-mount-{i}", b, labels)
            if b.overlay_upper
            else Mount(b.container, b.host, type="bind", read_only=b.read_only)
            for i, b in enumerate(inp.binds)
        ]
        if secrets:
            mounts.append(
                Mount(CONTAINER_SECRETS, str(self._write_secrets(inp.run_id, secrets)),
                      type="bind", read_only=True)
            )  # fmt: skip
        env = {
            "CONJURE_RUN_ID": str(inp.run_id),
            "CONJURE_MACHINE_ID": self.machine_id,
            "PYTHONUNBUFFERED": "1",
            "CONJURE_METRICS_FILE": f"{CONTAINER_META}/metrics.jsonl",
            **{k: v for k, v in inp.spec.env.items() if k not in (secrets or {})},
        }
        # The helper module is importable in every run, after the user's own path.
        env["PYTHONPATH"] = ":".join(
            p for p in (inp.spec.env.get("PYTHONPATH", ""), f"{CONTAINER_META}/lib") if p
        )
        kwargs: dict[str, object] = {}
        mtype = inp.spec.machine_type
        if mtype.vcpus:
            kwargs["nano_cpus"] = int(min(mtype.vcpus, self.host_cpus) * 1e9)
        if mtype.memory_gb:
            kwargs["mem_limit"] = int(min(mtype.memory_gb * 2**30, self.host_memory))
            kwargs["memswap_limit"] = kwargs["mem_limit"]  # the type's RAM, no swap on top
        requests = gpu_device_requests(mtype.gpus, bool(shutil.which("nvidia-smi")))
        if requests:
            kwargs["device_requests"] = requests
        try:
            c = self.docker.containers.create(
                inp.image,
                [
                    "sh",
                    "-c",
                    RUN_WRAPPER,
                    "conjure-run",
                    inp.spec.command,
                    exec_word(inp.spec.command),
                ],
                init=True,
                name=name,
                working_dir=inp.prepared.workdir,
                mounts=mounts,
                environment=env,
                network_mode="host",
                labels={MACHINE_LABEL: self.machine_id, RUN_LABEL: str(inp.run_id)},
                detach=True,
                **kwargs,
            )
        except docker.errors.ImageNotFound:
            raise _user_error(f"image {inp.image} is not on this machine", "NoImage") from None
        except docker.errors.APIError as e:
            if e.status_code == 409:  # a concurrent attempt created it first
                return self.docker.containers.get(name)
            # (docker.errors has no Conflict: naming it turned every such error into an
            # AttributeError)
            raise _NotStarted(f"the container could not be created: {e.explanation or e}") from None
        try:
            c.start()
        except docker.errors.APIError as e:
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
            raise _NotStarted(
                f"the container did not start: {e.explanation or e}".rstrip()
            ) from None
        return c

    def secrets_file(self, run_id: int) -> Path:
        base = SECRETS_TMPFS if SECRETS_TMPFS.is_dir() else self.dir / "secrets"
        return base / f"conjure-{self.machine_id}-secrets" / f"run-{run_id}.sh"

    def _write_secrets(self, run_id: int, secrets: dict[str, str]) -> Path:
        path = self.secrets_file(run_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # the folder guards it on the host
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:  # readable in the container by a non-root user
            f.write(shell_exports(secrets))
        return path

    def _drop_secrets(self, run_id: int) -> None:
        self.secrets_file(run_id).unlink(missing_ok=True)

    def _follow(self, container_id: str, stream: str, since_ns: int, writer: LogWriter) -> None:
        """Store the container's lines of one stream. A broken log stream (the engine
        busy, a read timeout) is opened again after the last line stored, a few times,
        so a flood's lines are neither lost unseen nor stored twice."""
        last = [since_ns]
        for attempt in range(5):
            try:
                self._follow_once(container_id, stream, last, writer)
                # The engine may end a followed stream before it sends the last line
                # when that line has no newline (seen with Docker 20.10, one time in
                # two): read once more, unfollowed, what came after the last line stored.
                self._follow_once(container_id, stream, last, writer, follow=False)
                return
            except Exception as e:
                logging.warning("reading the %s log of %s failed (%s): again", stream,
                                container_id[:12], e)  # fmt: skip
                time.sleep(0.2 * (attempt + 1))
        writer.note("[conjure] reading the container's output failed; lines may be missing")

    def _follow_once(
        self,
        container_id: str,
        stream: str,
        last: list[int],
        writer: LogWriter,
        follow: bool = True,
    ) -> None:
        kwargs: dict[str, object] = {}
        if last[0]:
            kwargs["since"] = last[0] / 1e9 - 0.001
        out = self.docker.api.logs(
            container_id,
            stdout=stream == "o",
            stderr=stream == "e",
            stream=True,
            follow=follow,
            timestamps=True,
            **kwargs,
        )
        since = last[0]  # fixed for this reading: lines may share a timestamp
        pending = b""
        for chunk in out:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                last[0] = max(last[0], self._emit(raw, stream, since, writer))
        if pending:
            last[0] = max(last[0], self._emit(pending, stream, since, writer))

    @staticmethod
    def _emit(raw: bytes, stream: str, since_ns: int, writer: LogWriter) -> int:
        """Store one line unless an earlier reading stored it; returns its time (ns)."""
        ts, _, text = raw.decode(errors="replace").partition(" ")
        try:
            t = parse_docker_ts(ts)
        except ValueError:
            t, text = time.time_ns(), raw.decode(errors="replace")
        if t <= since_ns:
            return since_ns  # already stored by an earlier attempt
        writer.add(stream, text.rstrip("\r"), t)
        return t

    @activity.defn(name="signal_container")
    def signal_container(self, inp: SignalContainerInput) -> None:
        run_id = inp.run_id
        kind = "kill" if inp.kind == "kill" else "stop"
        grace = inp.grace
        # Recorded first: if the container does not exist yet, execute applies it.
        write_halt(self.run_dir(run_id), kind, grace)
        try:
            c = self.docker.containers.get(self.container_name(run_id))
        except docker.errors.NotFound:
            return  # not started yet, or already gone: a repeated signal is harmless
        self._signal(c, kind, grace)

    # --- Saving ---------------------------------------------------------------------

    @activity.defn(name="save_outputs")
    def save_outputs(self, inp: SaveInput) -> SaveResult:
        with _heartbeat_while_running(every=5.0):
            return self._save_outputs(inp)

    def _save_outputs(self, inp: SaveInput) -> SaveResult:
        host_workdir = self.host_path(inp.run_id, inp.workdir)
        manifest_file = self.run_dir(inp.run_id) / "manifest.json"
        before = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
        changed, _ = changed_files(host_workdir, before, inp.workdir, inp.exclude)
        total = 0

        def upload(rel: str) -> int:
            path = host_workdir / rel
            self.store.put_file(path, f"runs/{inp.run_id}/{rel}")
            return path.stat().st_size

        with ThreadPoolExecutor(max_workers=8) as pool:
            for size in pool.map(upload, changed):
                total += size
                activity.heartbeat()
            # Files the run wrote inside its mounted folders (their overlays' upper layers).
            written = mount_writes(self.run_dir(inp.run_id), inp.run_id, inp.workdir)
            for size in pool.map(lambda fk: self.store.put_file(fk[0], fk[1]), written):
                total += size
                activity.heartbeat()
        return SaveResult(files=len(changed) + len(written), bytes=total)

    @activity.defn(name="cleanup_workspace")
    def cleanup_workspace(self, inp: CleanupInput) -> None:
        try:
            self.docker.containers.get(self.container_name(inp.run_id)).remove(force=True)
        except docker.errors.NotFound:
            pass
        remove_volumes(self.docker, {MACHINE_LABEL: self.machine_id, RUN_LABEL: str(inp.run_id)})
        self._drop_secrets(inp.run_id)
        shutil.rmtree(self.run_dir(inp.run_id), ignore_errors=True)


def _heartbeating(writer: LogWriter) -> Callable[[str], None]:
    def log(line: str) -> None:
        writer.note(line)
        with contextlib.suppress(Exception):
            activity.heartbeat()

    return log


@contextlib.contextmanager
def _heartbeat_while_running(every: float = 10.0) -> Iterator[None]:
    """Heartbeat from a side thread while a long, possibly quiet step runs."""
    done = threading.Event()
    ctx = contextvars.copy_context()

    def beat() -> None:
        while not done.wait(every):
            with contextlib.suppress(Exception):
                activity.heartbeat()

    t = threading.Thread(target=ctx.run, args=(beat,), daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(timeout=every + 1)


def checkout(pack: Path, repo: Path, commit: str, branch: str | None = None) -> None:
    """Make `repo` a shallow git repository at `commit` from a pack of that commit and
    its tree (cli/code.py), with the commit's files checked out; the commit id is the
    user's, so `git log` inside the run shows it."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

    def git(*args: str, stdin: Path | None = None) -> None:
        with contextlib.ExitStack() as files:
            proc = subprocess.run(
                ["git", *args],
                cwd=repo,
                stdin=files.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL,
                capture_output=True,
                env=env,
            )
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip()
            raise _user_error(
                f"checking out commit {commit} failed: git {args[0]}: {msg}", "BadCode"
            )

    name = branch or "conjure-run"
    git("init", "-q", f"--initial-branch={name}")
    git("index-pack", "--stdin", stdin=pack)
    (repo / ".git" / "shallow").write_text(commit + "\n")
    git("update-ref", f"refs/heads/{name}", commit)
    if not branch:  # detached at the commit, as after `git checkout <sha>`
        git("update-ref", "--no-deref", "HEAD", commit)
        git("branch", "-q", "-D", name)
    git("reset", "-q", "--hard", commit)


def changed_files(
    host_workdir: Path, before: dict[str, list[int]], workdir: str, exclude: list[str]
) -> tuple[list[str], dict[str, list[int]]]:
    """Files below the working directory new or changed since `before` (a snapshot),
    without mounted folders (`exclude`: their container paths) and the checkout's .git;
    and the snapshot now."""
    excluded = []
    for dest in exclude:
        p = PurePosixPath(dest)
        if not p.is_absolute():
            p = PurePosixPath(workdir) / p
        try:
            excluded.append(str(p.relative_to(workdir)))
        except ValueError:
            continue
    now = {rel: list(sig) for rel, sig in _snapshot(host_workdir).items()}
    changed = [
        rel
        for rel, sig in now.items()
        if before.get(rel) != sig
        and not any(rel == e or rel.startswith(e + "/") for e in excluded)
        and not rel.startswith(".git/")  # the checkout's own repository, not an output
    ]
    return changed, now


class CheckpointSync:
    """`--auto-resume`: while the command runs, files new or changed in its working
    directory go to runs/<N>/ every `checkpoint_sync_seconds` (and once more when the
    agent is told to stop), so a new attempt on another machine can go on from them."""

    def __init__(
        self, acts: MachineActivities, inp: ExecuteInput, note: Callable[[str], None]
    ) -> None:
        self.every = inp.options.checkpoint_sync_seconds if inp.spec.auto_resume > 1 else 0.0
        self.store = acts.store
        self.run_id = inp.run_id
        self.workdir = inp.prepared.workdir
        self.host_workdir = acts.host_path(inp.run_id, inp.prepared.workdir)
        self.exclude = [m.dest for m in inp.spec.mounts]
        manifest = acts.run_dir(inp.run_id) / "manifest.json"
        self.synced: dict[str, list[int]] = (
            json.loads(manifest.read_text()) if manifest.exists() else {}
        )
        self.note = note
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> CheckpointSync:
        if self.every > 0:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sync()

    def sync(self) -> int:
        """Upload what changed since the last sync; returns how many files."""
        with self._lock:
            try:
                changed, now = changed_files(
                    self.host_workdir, self.synced, self.workdir, self.exclude
                )
                for rel in changed:
                    self.store.put_file(self.host_workdir / rel, f"runs/{self.run_id}/{rel}")
                    self.synced[rel] = now[rel]
                return len(changed)
            except Exception as e:  # a file that vanished meanwhile, a store hiccup: next time
                self.note(f"[conjure] checkpoint sync: {e}")
                return 0

    def close(self, final: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            if final:
                self.sync()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Regular files below root: relative path -> (size, mtime_ns).

    Symlinks are not followed: one that points at a file inside the workspace is
    taken as that file, anything else (outside, to a folder, dangling) is skipped.
    """
    out: dict[str, tuple[int, int]] = {}
    real_root = root.resolve()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                if path.is_symlink():
                    target = path.resolve(strict=True)
                    if not target.is_relative_to(real_root) or not target.is_file():
                        continue
                    st = target.stat()
                else:
                    st = path.lstat()
                    if not path.is_file():
                        continue
            except (OSError, RuntimeError):
                continue
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def gpu_device_requests(gpus: int, has_nvidia_smi: bool) -> list[docker.types.DeviceRequest]:
    """The run container's GPUs: the machine type's count, where the host has NVIDIA's
    driver (the NVIDIA container toolkit hands them in, as `docker run --gpus N`)."""
    if not gpus or not has_nvidia_smi:
        return []
    return [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])]


def _extract_data(tar: tarfile.TarFile, dest: Path) -> None:
    """extractall with the "data" filter; on a Python without filters (before 3.11.4,
    e.g. a Debian 12 host's python3 running the agent) the same refusals by hand:
    no absolute or escaping paths, no links out of the tree, no devices."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for m in tar.getmembers():
        target = (root / m.name).resolve()
        link_ok = True
        if m.issym() or m.islnk():
            base = target.parent if m.issym() else root
            link_ok = (base / m.linkname).resolve().is_relative_to(root)
        if m.name.startswith("/") or not target.is_relative_to(root) or not link_ok or m.isdev():
            raise ValueError(f"unsafe path in the code archive: {m.name}")
    tar.extractall(dest)
