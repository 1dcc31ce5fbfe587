"""Spec building: validate what a run asks for, package its code, keep its secrets.

`RunArgs` is the one definition of what a run can ask for: the keywords of
`Conjure.run`, the flags of `conjure run`/`conjure rerun` (cli/commands/flags.py) and the
keys of a pipeline step (cli/pipelines.py) are its fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from conjure.cli.checks import check_value, check_values
from conjure.cli.client import Connection
from conjure.cli.code import package_code, package_github
from conjure.cli.mounts import parse_mount
from conjure.cli.preflight import check_docker, check_local_image
from conjure.infra import environment
from conjure.infra.catalog import UnknownMachineType, lookup
from conjure.infra.errors import ConfigError, UsageError
from conjure.infra.secrets import REDACTED, is_secret, split_env, store_secrets
from conjure.infra.store import StoreError, open_source
from conjure.workflows.models import CodeSpec, EnvSpec, MachineType, MountSpec, RunSpec
from conjure.workflows.stop_conditions import StopCondition, parse_stop_condition

Warn = Callable[[str], None]
"""Where the API sends warnings (the CLI prints them; None drops them)."""


@dataclass(kw_only=True)
class RunArgs:
    """What a run asks for besides its command."""

    machine_type: str | None = None
    # SRC[:DEST] strings, or a dict {SRC: DEST} as Spell took them
    mounts: Sequence[str] | Mapping[str, str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    github_url: str | None = None
    github_ref: str | None = None
    commit_ref: str | None = None
    apt: Sequence[str] = field(default_factory=list)
    pip: Sequence[str] = field(default_factory=list)
    pip_req: Path | str | None = None
    conda_file: Path | str | None = None
    docker_image: str | None = None
    framework: str | None = None
    deps_from_env: bool = False
    stop_conditions: Sequence[str] = field(default_factory=list)  # "NAME OP VALUE[ : K]"
    # A run whose machine is reclaimed or lost goes on, from the files it saved so far, on
    # a new machine, up to auto_resume attempts in all; after spot_fallback interruptions
    # its next attempts ask for the machine type on demand.
    auto_resume: int = 0
    spot_fallback: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.mounts, Mapping):  # Spell's {SRC: DEST}
            self.mounts = [f"{s}:{d}" if d else str(s) for s, d in self.mounts.items()]
        elif isinstance(self.mounts, str):
            self.mounts = [self.mounts]  # one mount, not its characters
        self.mounts = list(self.mounts or [])
        self.env = dict(self.env or {})
        self.apt = list(self.apt or [])
        self.pip = list(self.pip or [])
        self.stop_conditions = list(self.stop_conditions or [])


RUN_ARG_NAMES = tuple(f.name for f in fields(RunArgs))


def machine_type(conn: Connection, name: str | None) -> MachineType:
    check_value("machine_type", name)  # '' is a mistake, not the default
    try:
        return lookup(name or conn.settings.default_machine_type, conn.catalog)
    except UnknownMachineType as e:
        raise UsageError(str(e)) from None


def parse_stop_conditions(texts: Sequence[str]) -> list[StopCondition]:
    """`--stop-condition` values; a malformed one is a UsageError (exit 2)."""
    out = []
    for text in texts:
        try:
            out.append(parse_stop_condition(text))
        except ValueError as e:
            raise UsageError(f"--stop-condition: {e}") from None
    return out


def frameworks(conn: Connection) -> dict[str, environment.Framework]:
    try:
        return environment.load_frameworks(conn.settings.home / "config.toml")
    except UsageError as e:
        raise ConfigError(f"the framework catalog is invalid: {e}") from None


def environment_spec(conn: Connection, args: RunArgs, warn: Warn | None = None) -> EnvSpec:
    """Validate the environment flags and name the image (UsageError on a bad value)."""
    local = environment.deps_from_env() if args.deps_from_env else None
    if local is not None and warn:
        n = len(local.pip)
        what = f"{n} package(s)" if local.pip else "a conda environment file"
        warn(f"--deps-from-env: {what} from the {local.source}")
    return environment.build_env_spec(
        base_image=conn.settings.base_image,
        docker_image=args.docker_image,
        framework=args.framework,
        apt=args.apt,
        pip=args.pip,
        pip_req=Path(args.pip_req) if args.pip_req else None,
        conda_file=Path(args.conda_file) if args.conda_file else None,
        local=local,
        frameworks=frameworks(conn),
        registry=conn.settings.registry,
        ca_digest=environment.file_digest(conn.settings.ca_bundle_path),
    )


def package(
    conn: Connection,
    cwd: Path | None = None,
    *,
    github_url: str | None = None,
    github_ref: str | None = None,
    commit_ref: str | None = None,
    warn: Warn | None = None,
) -> CodeSpec:
    """The run's code: the working tree, a commit of it, or a git URL."""
    check_values(github_url=github_url, github_ref=github_ref, commit_ref=commit_ref)
    if github_url and commit_ref:
        raise UsageError("--github-url and --commit-ref cannot be combined")
    if github_ref and not github_url:
        raise UsageError("--github-ref needs --github-url")
    if github_url:
        packaged = package_github(conn.store, github_url, github_ref)
    else:
        packaged = package_code(
            conn.store,
            cwd or Path.cwd(),
            include_uncommitted=conn.settings.include_uncommitted,
            commit_ref=commit_ref,
        )
    for w in packaged.warnings:
        if warn:
            warn(w)
    return packaged.code


def parse_mounts(
    conn: Connection,
    mounts: Sequence[str],
    code: CodeSpec,
    *,
    step_refs: set[str] | None = None,
) -> list[MountSpec]:
    """`--mount` values, checked against the store; in a pipeline, `{steps.NAME}` may
    name a step of step_refs."""
    from conjure.workflows.pipeline_models import step_ref

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
            found = open_source(m.source, conn.store, conn.settings)[2]
        except StoreError as e:
            raise UsageError(f"--mount: {e}") from None
        if not found:
            raise UsageError(f"--mount: {m.source} does not exist")
        mount_specs.append(m)
    dests = [m.dest for m in mount_specs]
    if len(set(dests)) != len(dests):
        raise UsageError("--mount: two mounts have the same destination")
    return mount_specs


def check_env_names(env: dict[str, str]) -> None:
    for name in env:
        if (
            not name
            or not (name[0].isalpha() or name[0] == "_")
            or not all(ch.isalnum() or ch == "_" for ch in name)
        ):
            raise UsageError(f"--env: {name!r} is not a valid variable name")


async def build_spec(
    conn: Connection,
    command: str,
    args: RunArgs,
    *,
    cwd: Path | None = None,
    request_id: str | None = None,
    warn: Warn | None = None,
    step_refs: set[str] | None = None,
    code: CodeSpec | None = None,
) -> RunSpec:
    """Validate, package the code and keep the secrets: the spec of one run.

    step_refs: in a pipeline, the step names a mount may name as `{steps.NAME}`.
    code: an already packaged CodeSpec (pipelines package the code once; reruns keep it).
    """
    if not command or not command.strip():
        raise UsageError("the command is empty")
    check_values(
        machine_type=args.machine_type, mount=args.mounts, github_url=args.github_url,
        github_ref=args.github_ref, commit_ref=args.commit_ref, apt=args.apt, pip=args.pip,
        pip_req=None if args.pip_req is None else str(args.pip_req),
        conda_file=None if args.conda_file is None else str(args.conda_file),
        docker_image=args.docker_image, framework=args.framework,
    )  # fmt: skip
    if args.auto_resume < 0 or args.spot_fallback < 0:
        raise UsageError("--auto-resume and --spot-fallback take a number of at least 0")
    if args.spot_fallback and args.auto_resume < 2:
        raise UsageError("--spot-fallback needs --auto-resume (of 2 attempts or more)")
    mtype = machine_type(conn, args.machine_type)
    check_env_names(args.env)
    env_spec = environment_spec(conn, args, warn)
    if conn.settings.provider == "local":
        check_docker(conn.settings)
        if env_spec.docker_image:
            check_local_image(conn.settings, env_spec.docker_image)
    await conn.client()  # unreachable server: fail before uploading anything
    if code is None:
        code = package(
            conn, cwd, github_url=args.github_url, github_ref=args.github_ref,
            commit_ref=args.commit_ref, warn=warn,
        )  # fmt: skip
    mount_specs = parse_mounts(conn, list(args.mounts), code, step_refs=step_refs)
    request_id = request_id or uuid.uuid4().hex
    shown, secret = split_env(args.env)
    secrets_key = store_secrets(conn.store, request_id, secret)
    return RunSpec(
        command=command,
        machine_type=mtype,
        code=code,
        mounts=mount_specs,
        env=shown,
        request_id=request_id,
        secrets_key=secrets_key,
        environment=env_spec,
        auto_resume=args.auto_resume,
        spot_fallback=args.spot_fallback,
    )


def check_rerun_args(args: RunArgs) -> None:
    """The values a rerun may override: an empty or malformed one is a UsageError, before
    anything is asked of the server."""
    check_values(
        machine_type=args.machine_type, mount=args.mounts, github_url=args.github_url,
        github_ref=args.github_ref, commit_ref=args.commit_ref,
    )  # fmt: skip


async def rerun_spec(
    conn: Connection,
    old: RunSpec,
    command: str | None,
    args: RunArgs,
    *,
    keep_mounts: bool,
    cwd: Path | None = None,
    warn: Warn | None = None,
) -> RunSpec:
    """The spec of a new run with old's spec; what args gives overrides it.

    Secret values are not kept for reruns: a SECRET* variable that is not given again is
    `<REDACTED>` in the new run (as Spell does)."""
    check_rerun_args(args)
    merged = {**old.env, **args.env}
    missing = [k for k, v in merged.items() if is_secret(k) and v == REDACTED]
    if missing and warn:
        warn(
            f"{', '.join(missing)} not given again: the new run gets <REDACTED> "
            "(pass --env NAME=VALUE to set it)"
        )
    given = {k: v for k, v in merged.items() if not (is_secret(k) and v == REDACTED)}
    if args.github_url or args.commit_ref:
        code = package(
            conn, cwd, github_url=args.github_url, github_ref=args.github_ref,
            commit_ref=args.commit_ref, warn=warn,
        )  # fmt: skip
    else:
        if args.github_ref:
            raise UsageError("--github-ref needs --github-url")
        code = old.code
    mounts = [f"{m.source}:{m.dest}" for m in old.mounts] if keep_mounts else args.mounts
    spec = await build_spec(
        conn,
        command or old.command,
        RunArgs(machine_type=args.machine_type or old.machine_type.name, mounts=mounts, env=given),
        code=code,
    )
    spec.env.update(dict.fromkeys(missing, REDACTED))
    spec.environment = old.environment
    return spec
