"""The default base image: built with debootstrap + docker import, against the real engine."""

from __future__ import annotations

import contextlib
import pathlib

import docker
import docker.errors
import pytest

from conjure.infra.base_image import DEFAULT_MIRROR, detect_debian_mirror, ensure_base_image
from conjure.infra.config import Settings


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except docker.errors.DockerException as e:  # pragma: no cover - depends on the host
        pytest.skip(f"no Docker engine: {e}")
    return c


def test_default_base_image_runs_python_and_git(client: docker.DockerClient) -> None:
    settings = Settings()
    image = settings.base_image
    image_id = ensure_base_image(client, image, ca_bundle=settings.ca_bundle_path, log=print)
    assert image_id.startswith("sha256:")
    assert client.images.get(image).id == image_id
    # Fast path: an existing image is returned at once, unchanged.
    assert ensure_base_image(client, image) == image_id
    assert client.images.get(image).labels.get("org.conjure.base") == "1"

    out = client.containers.run(
        image,
        ["sh", "-c", "python3 -c 'import venv, ssl; print(1)' && git --version"],
        network_mode="host",
        remove=True,
    ).decode()
    lines = out.strip().splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("git version")


def test_detect_debian_mirror(tmp_path: pathlib.Path) -> None:
    # Nothing configured: the default mirror.
    assert detect_debian_mirror(tmp_path) == DEFAULT_MIRROR

    # One-line sources.list (with options, comments and a security line first).
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://ftp.example.org/debian "
        "bookworm main contrib\n"
        "deb-src http://src.example.org/debian bookworm main\n"
    )
    assert detect_debian_mirror(tmp_path) == "http://ftp.example.org/debian"

    # deb822 debian.sources wins over sources.list; disabled stanzas are skipped.
    listd = tmp_path / "sources.list.d"
    listd.mkdir()
    (listd / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://disabled.example/debian\n"
        "Suites: bookworm\n"
        "Components: main\n"
        "Enabled: no\n"
        "\n"
        "Types: deb deb-src\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example.net/debian http://second.example.net/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
    )
    assert detect_debian_mirror(tmp_path) == "http://mirror.example.net/debian"

    # An Ubuntu host's archive has no bookworm: fall back to the default.
    (listd / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb http://archive.ubuntu.com/ubuntu jammy main universe\n"
    )
    (listd / "ubuntu.sources").write_text(
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble noble-updates\n"
        "Components: main\n"
    )
    assert detect_debian_mirror(tmp_path) == DEFAULT_MIRROR


@pytest.mark.base_build
def test_fresh_base_image_has_python_and_pip(
    client: docker.DockerClient, tmp_path: pathlib.Path
) -> None:
    """A new install's base image, built from scratch under a test-only tag (the shared
    base image is left alone): `python` and `pip` are Python 3's."""
    import uuid

    settings = Settings()
    image = f"conjure-test/base:{uuid.uuid4().hex[:12]}"
    try:
        ensure_base_image(
            client, image, ca_bundle=settings.ca_bundle_path, cache_dir=tmp_path, log=print
        )
        out = client.containers.run(
            image,
            ["sh", "-c", "python -c 'import sys; print(sys.version_info[0])' && pip --version"],
            network_mode="host",
            remove=True,
        ).decode()
        lines = out.strip().splitlines()
        assert lines[0] == "3"
        assert lines[1].startswith("pip ") and "python 3" in lines[1]
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image, force=True)
