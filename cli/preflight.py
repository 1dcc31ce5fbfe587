"""Checks made on this host before anything starts: the Docker engine, a custom image."""

from __future__ import annotations

from typing import Any

from conjure.infra.config import Settings
from conjure.infra.errors import UnreachableError, UsageError


def docker_client(settings: Settings) -> Any:
    """A Docker client that answered a ping; UnreachableError otherwise."""
    import docker

    try:
        client = (
            docker.DockerClient(base_url=settings.docker_host)
            if settings.docker_host
            else docker.from_env()
        )
        client.ping()
    except Exception as e:
        raise _unreachable(e) from None
    return client


def _unreachable(e: Exception) -> UnreachableError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return UnreachableError(
        f"the Docker engine is not reachable ({first[:160]}); start it "
        "(./install.sh does) or set DOCKER_HOST"
    )


def check_docker(settings: Settings) -> None:
    """The local provider needs a Docker engine on this host (a /_ping over its socket,
    without the Docker SDK)."""
    if settings.provider != "local":
        return
    from conjure.infra.docker_ping import ping

    try:
        ping(settings.docker_host)
    except Exception as e:
        raise _unreachable(e) from None


def check_local_image(settings: Settings, image: str) -> None:
    """--docker-image on the local provider: present or pullable, with a shell and Python."""
    from conjure.infra import env_build

    client = docker_client(settings)
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
