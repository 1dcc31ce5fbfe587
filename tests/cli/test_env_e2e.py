"""Environments end to end, through the real `conjure` entry point against the real
stack and Docker engine: builds, the cache, frameworks, custom images, failed builds,
conda's unreachable channel, and pushing to / pulling from Debian's docker-registry.

Each test first removes the images it expects to build (`conjure images prune TAG`),
so a second run of the suite on the same Docker engine still builds."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conjure import AsyncConjure
from conjure.infra.config import Settings, get_settings
from tests.cli.test_run_e2e import run_id_of, status
from tests.conftest import conjure, free_port

REGISTRY_BIN = "/usr/bin/docker-registry"


def env_tag(**flags: object) -> str:
    return AsyncConjure(get_settings()).environment(**flags).tag  # type: ignore[arg-type]


def forget(*tags: str) -> None:
    """Remove these images from the engine so the test builds them (prune tests itself)."""
    import docker
    import docker.errors

    client = docker.from_env()
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass  # already absent


def states(run_id: int) -> list[str]:
    return [c["state"] for c in status(run_id)["timeline"]]


def test_pip_req_then_pip_apt_cache_and_rebuild(conjure_stack: Settings, tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")
    flags = ["--pip-req", "requirements.txt", "--pip", "six==1.17.0", "--apt", "jq"]
    tag = env_tag(pip_req=req, pip=["six==1.17.0"], apt=["jq"])
    forget(tag)
    cmd = "python3 -c 'import six; print(six.__version__)' && jq --version"

    first = conjure("run", *flags, cmd, cwd=tmp_path)
    assert first.code == 0, first
    assert first.out == "1.17.0\njq-1.6\n"  # --pip is installed after --pip-req and wins
    assert "Building… done (environment built)" in first.err, first
    n1 = run_id_of(first.err)
    st1 = status(n1)
    assert st1["image"] == tag and st1["image_source"] == "built"
    log = conjure("logs", str(n1))
    assert "Step " in log.err + log.out and "Successfully installed six-1.16.0" in log.out + log.err

    second = conjure("run", *flags, cmd, cwd=tmp_path)
    assert second.code == 0, second
    assert second.out == first.out
    assert "Building… done (environment cached)" in second.err, second
    st2 = status(run_id_of(second.err))
    assert st2["image"] == tag and st2["image_cached"] is True and st2["image_source"] == "cached"
    assert states(run_id_of(second.err))[-1] == "Complete"

    req.write_text("six==1.15.0\n")  # one line changed: a new image
    third = conjure("run", *flags, "python3 -c 'import six; print(six.__version__)'", cwd=tmp_path)
    assert third.code == 0, third
    assert "(environment built)" in third.err, third
    st3 = status(run_id_of(third.err))
    assert st3["image"] != tag and st3["image"].startswith("conjure/env:")
    forget(st3["image"])

    # conjure images lists them with sizes
    imgs = conjure("images", "--json")
    assert imgs.code == 0, imgs
    found = [i for i in json.loads(imgs.out) if tag in i["tags"]]
    assert found and found[0]["size"] > 0 and found[0]["kind"] == "env"
    human = conjure("images")
    assert tag in human.out and "MB" in human.out


def test_failed_build_ends_failed_in_building(conjure_stack: Settings, tmp_path: Path) -> None:
    forget(env_tag(pip=["conjure-no-such-package-xyz==9.9"]))
    r = conjure("run", "--pip", "conjure-no-such-package-xyz==9.9", "echo never", cwd=tmp_path)
    assert r.code != 0, r
    assert "never" not in r.out
    n = run_id_of(r.err)
    st = status(n)
    assert st["state"] == "Failed"
    assert states(n)[-2:] == ["Building", "Failed"]
    reason = st["reason"]
    assert reason.startswith("Building failed: step ") and "pip install" in reason, reason
    assert "conjure-no-such-package-xyz" in reason, reason
    assert reason in r.err
    log = conjure("logs", str(n))
    assert "No matching distribution found" in log.out + log.err


def test_framework_numpy_built_and_run(conjure_stack: Settings, tmp_path: Path) -> None:
    tag = env_tag(framework="numpy")
    assert tag.startswith("conjure/framework:numpy-")
    forget(tag)
    r = conjure("run", "--framework", "numpy", "python3 -c 'import numpy; print(numpy.__name__)'",
                cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r
    assert r.out == "numpy\n" and "(environment built)" in r.err
    assert status(run_id_of(r.err))["image"] == tag
    # the default framework is the base image itself
    d = conjure("run", "--framework", "default", "python3 -c 'import numpy'", cwd=tmp_path)
    assert d.code == 1 and "No module named 'numpy'" in d.err, d
    assert status(run_id_of(d.err))["image"] == conjure_stack.base_image
    imgs = json.loads(conjure("images", "--json").out)
    assert any(tag in i["tags"] and i["kind"] == "framework" and i["framework"] == "numpy"
               for i in imgs)  # fmt: skip


@pytest.fixture(scope="module")
def custom_images(conjure_stack: Settings) -> Iterator[dict[str, str]]:
    """Local images standing in for users' own: one good, one without Python, one without a shell."""
    client = docker.from_env()
    names = {
        "good": "conjure-test/custom:good",
        "nopython": "conjure-test/custom:nopython",
        "noshell": "conjure-test/custom:noshell",
    }
    import io

    for key, body in {
        "good": "RUN echo custom-image > /marker",
        "nopython": "RUN rm -f /usr/bin/python3* /usr/bin/python",
    }.items():
        df = f"FROM {conjure_stack.base_image}\n{body}\n"
        client.images.build(fileobj=io.BytesIO(df.encode()), tag=names[key], network_mode="host",
                            rm=True)  # fmt: skip
    tar = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    client.api.import_image_from_data(
        tar.getvalue(), repository="conjure-test/custom", tag="noshell"
    )
    yield names
    for name in names.values():
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(name, force=True)


def test_docker_image_combined_with_pip(
    conjure_stack: Settings, tmp_path: Path, custom_images: dict[str, str]
) -> None:
    image = custom_images["good"]
    forget(env_tag(docker_image=image, pip=["six==1.16.0"]))
    r = conjure("run", "--docker-image", image, "--pip", "six==1.16.0",
                "cat /marker && python3 -c 'import six; print(six.__version__)'", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r
    assert r.out == "custom-image\n1.16.0\n"
    # alone, the custom image is used as it is
    alone = conjure("run", "--docker-image", image, "cat /marker", cwd=tmp_path)
    assert alone.code == 0 and alone.out == "custom-image\n", alone
    assert status(run_id_of(alone.err))["image"] == image


def test_docker_image_requirements_checked(
    conjure_stack: Settings, tmp_path: Path, custom_images: dict[str, str]
) -> None:
    r = conjure("run", "--docker-image", custom_images["nopython"], "echo hi", cwd=tmp_path)
    assert r.code == 2, r
    assert f"image {custom_images['nopython']} has no Python" in r.err and "Casting" not in r.err
    r = conjure("run", "--docker-image", custom_images["noshell"], "echo hi", cwd=tmp_path)
    assert r.code == 2, r
    assert f"image {custom_images['noshell']} has no shell /bin/sh" in r.err


def test_conda_file_unreachable_channel_is_clear(conjure_stack: Settings, tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(
        "name: mine\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - six\n"
    )
    forget(env_tag(conda_file=tmp_path / "environment.yml"))
    r = conjure("run", "--conda-file", "environment.yml", "python -c 'import six'", cwd=tmp_path)
    assert r.code != 0, r
    st = status(run_id_of(r.err))
    assert st["state"] == "Failed" and states(run_id_of(r.err))[-2] == "Building"
    assert "fetch_micromamba.py" in st["reason"], st["reason"]
    assert "conda channel conda-forge is not reachable from this machine" in st["reason"], st


# --- the registry ------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1:5000 (a free port if 5000 is taken),
    storing in a temporary directory."""
    assert os.access(REGISTRY_BIN, os.X_OK), "test.sh installs the docker-registry package"
    root = tmp_path_factory.mktemp("registry")
    lock = open("/tmp/conjure-registry-5000.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 5000))
        port = 5000
    except OSError:
        port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "registry.log", "w"))  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError((root / "registry.log").read_text()) from None
            time.sleep(0.2)
    yield address
    proc.terminate()
    proc.wait(timeout=10)
    lock.close()
    shutil.rmtree(root, ignore_errors=True)


def test_push_then_pull_on_another_machine(
    conjure_stack: Settings, tmp_path: Path, registry: str
) -> None:
    env = {"CONJURE_REGISTRY": registry}
    os.environ["CONJURE_REGISTRY"] = registry
    try:
        tag = env_tag(pip=["six==1.16.0"])
    finally:
        del os.environ["CONJURE_REGISTRY"]
    assert tag.startswith(f"{registry}/conjure/env:")
    forget(tag)
    cmd = "python3 -c 'import six; print(six.__version__)'"
    first = conjure("run", "--pip", "six==1.16.0", cmd, cwd=tmp_path, env=env)
    assert first.code == 0, first
    assert "(environment built)" in first.err and f"Pushing… done (pushed {tag})" in first.err, (
        first
    )
    st1 = status(run_id_of(first.err))
    assert st1["image_pushed"] is True and "Pushing" in states(run_id_of(first.err))
    catalog = json.loads(urllib.request.urlopen(f"http://{registry}/v2/_catalog").read())
    assert "conjure/env" in catalog["repositories"]

    docker.from_env().images.remove(tag)  # this engine's copy is gone
    # Another machine type: the pool starts a second machine for it.
    second = conjure("run", "-t", "cpu-big", "--pip", "six==1.16.0", cmd, cwd=tmp_path, env=env)
    assert second.code == 0, second
    assert second.out == "1.16.0\n"
    assert f"(environment pulled from the registry: {tag})" in second.err, second
    st2 = status(run_id_of(second.err))
    assert st2["image_source"] == "pulled" and st2["machine_id"] != st1["machine_id"]
    assert st2["image_pushed"] is None  # pulled, not built: nothing to push
    log = conjure("logs", str(run_id_of(second.err)))
    assert f"environment pulled from {registry}" in log.out + log.err


def test_deps_from_env_end_to_end(conjure_stack: Settings, tmp_path: Path) -> None:
    """A real virtual environment's top-level package ends up in the run; --pip wins."""
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "python-dateutil"],
                   check=True, capture_output=True)  # fmt: skip
    env = {"VIRTUAL_ENV": str(venv)}
    os.environ["VIRTUAL_ENV"] = str(venv)
    try:
        spec = AsyncConjure(get_settings()).environment(deps_from_env=True, pip=["six==1.16.0"])
    finally:
        del os.environ["VIRTUAL_ENV"]
    assert [p.split("==")[0].lower() for p in spec.pip] == ["python-dateutil", "six"]
    forget(spec.tag)
    r = conjure("run", "--deps-from-env", "--pip", "six==1.16.0",
                "python3 -c 'import dateutil, six; print(six.__version__)'", cwd=tmp_path, env=env)  # fmt: skip
    assert r.code == 0, r
    assert r.out == "1.16.0\n"
    assert "--deps-from-env: 1 package(s) from the virtual environment" in r.err
    assert status(run_id_of(r.err))["image"] == spec.tag
