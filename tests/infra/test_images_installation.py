"""`conjure images` / `conjure images prune` touch only this installation's images: two
installations (two stores) build images on one real Docker engine."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import docker.errors
import pytest

from conjure.infra import env_build
from conjure.infra.config import Settings
from conjure.infra.installation import installation_id
from conjure.infra.store import open_store
from conjure.workflows.models import EnvSpec


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


def test_images_and_prune_keep_to_their_installation(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    a = installation_id(open_store(f"file://{tmp_path / 'a'}"))
    b = installation_id(open_store(f"file://{tmp_path / 'b'}"))
    assert a != b and installation_id(open_store(f"file://{tmp_path / 'a'}")) == a
    assert (tmp_path / "a" / "installation-id").read_text() == a

    base = Settings().base_image
    tags = {who: f"conjure-test/env:{uuid.uuid4().hex[:12]}" for who in (a, b)}
    try:
        for who, tag in tags.items():
            env_build.ensure_environment(
                client,
                EnvSpec(tag=tag),  # no packages: the python step alone
                base_image=base,
                ensure_base=lambda: True,
                work_dir=tmp_path / "work",
                log=print,
                installation=who,
            )
        mine = [t for i in env_build.list_images(client, a) for t in i.tags]
        assert tags[a] in mine and tags[b] not in mine
        removed, _ = env_build.prune_images(client, None, a)
        assert tags[a] in removed and tags[b] not in removed
        assert env_build.image_exists(client, tags[b]) and not env_build.image_exists(
            client, tags[a]
        )
    finally:
        for tag in tags.values():
            try:
                client.images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass
