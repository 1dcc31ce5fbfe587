"""Defects a fault campaign found (issue 15), each end to end against the real stack:
a container Docker will not start, a failed build, code that cannot be archived, and
secrets that must leave no residue."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
import uuid
from pathlib import Path

import docker

from conjure import AsyncConjure
from conjure.infra.config import Settings
from conjure.infra.logs import LogReader
from conjure.infra.store import open_store
from conjure.workflows.models import MountSpec, RunState
from tests.cli.test_run_e2e import git, run_id_of, status
from tests.conftest import conjure


def _wait_final(run_id: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(run_id)
        if st["state"] in ("Complete", "Failed", "Stopped", "Killed", "Interrupted"):
            return st
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not final after {timeout}s: {st}")


def _log(settings: Settings, run_id: int) -> list[str]:
    store = open_store(settings.store, settings)
    return [line.text for line in LogReader(store, run_id).poll()]


def test_container_docker_refuses_says_why(conjure_stack: Settings, tmp_path: Path) -> None:
    """A mount Docker refuses (reaching the agent through the API, past the CLI's
    check): Docker's error is the run's reason and in its log, tried once."""
    r = conjure("run", "echo hi > hi.txt", cwd=tmp_path)
    assert r.code == 0, r
    source_run = run_id_of(r.err)

    async def submit() -> int:
        c = AsyncConjure(conjure_stack)
        spec = await c.build_spec("echo never", cwd=tmp_path)
        spec.mounts = [MountSpec(source=f"runs/{source_run}/hi.txt", dest="/proc/x")]
        return (await c.submit(spec, c.run_options())).id

    run_id = asyncio.run(submit())
    st = _wait_final(run_id)
    assert st["state"] == RunState.FAILED.value
    assert "did not start" in st["reason"], st["reason"]
    assert "proc" in st["reason"], st["reason"]  # Docker's own words
    assert "exit code" not in st["reason"]
    log = _log(conjure_stack, run_id)
    assert any("did not start" in line and "proc" in line for line in log), log


def test_failed_build_cleans_up_and_says_failed(
    conjure_stack: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    missing = f"conjure-no-such-package-{uuid.uuid4().hex[:10]}"  # a fresh layer each time
    r = conjure("run", "--pip", missing, "echo never", cwd=tmp_path, timeout=600)
    assert r.code != 0, r
    run_id = run_id_of(r.err)
    assert "Building… failed" in r.err, r.err
    assert "Building… done" not in r.err, r.err
    st = status(run_id)
    assert st["state"] == "Failed" and st["reason"].startswith("Building failed"), st
    # The workspace is gone from the machine.
    machine_dir = conjure_stack.machines_dir / st["machine_id"]
    assert machine_dir.exists()
    assert not (machine_dir / "runs" / str(run_id)).exists()
    # The layers the failed build made are gone too (none left dangling).
    made = [
        m.group(1)
        for line in _log(conjure_stack, run_id)
        if (m := re.match(r"^\s*---> ([0-9a-f]{12})$", line))
    ]
    assert made, "the build made no layer: the test would prove nothing"
    dangling = {
        i.split(":", 1)[-1][:12]
        for i in docker_client.api.images(all=True, quiet=True, filters={"dangling": True})
    }
    left = [i for i in made if i in dangling]
    assert not left, f"dangling layers of the failed build: {left}"


def test_code_with_an_absolute_link_runs(conjure_stack: Settings, tmp_path: Path) -> None:
    """The campaign's case: a committed link to an absolute path. Since runs are git
    checkouts it runs as committed (the link points into the container's own tree), in
    one attempt; an unpackable tar archive of an older run fails at once, naming the
    code archive (tests/activities/test_machine_hardening.py)."""
    repo = tmp_path / "linky"
    repo.mkdir()
    os.symlink("/etc/hostname", repo / "abs-link")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a link to an absolute path")
    r = conjure("run", "readlink abs-link", cwd=repo)
    assert r.code == 0, r
    assert r.out == "/etc/hostname\n"


def test_secrets_leave_no_residue(
    conjure_stack: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    cmd = f'test "$SECRET_TOKEN" = {secret[:7]}"$TAIL" && sleep 20 && echo same'
    r = conjure(
        "run", "-b", "-e", f"SECRET_TOKEN={secret}", "-e", f"TAIL={secret[7:]}", cmd,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r
    run_id = int(r.out.strip())
    secrets_dir = conjure_stack.home / "store" / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    # While it runs, the container's configuration does not hold the value.
    container = None
    deadline = time.monotonic() + 180
    while container is None and time.monotonic() < deadline:
        st = status(run_id)
        if st["state"] == "Running" and st["machine_id"]:
            # This stack's machine: other stacks on the engine have a run of this id too.
            labels = [f"org.conjure.run={run_id}", f"org.conjure.machine={st['machine_id']}"]
            found = docker_client.containers.list(filters={"label": labels})
            container = found[0] if found else None
        time.sleep(0.2)
    assert container is not None, "the run's container never ran"
    inspected = json.dumps(docker_client.api.inspect_container(container.id))
    assert secret not in inspected
    assert not any(e.startswith("SECRET_TOKEN=") for e in container.attrs["Config"]["Env"])
    st = _wait_final(run_id)
    assert st["state"] == "Complete", st  # the program saw the real value
    assert "same" in _log(conjure_stack, run_id)
    assert not list(secrets_dir.glob("*.json")), list(secrets_dir.iterdir())
    residue = [p for p in Path("/dev/shm").rglob("*") if p.is_file() and secret in _read(p)]
    assert not residue


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""
