"""Is the Docker engine there? One `GET /_ping` over its socket, without the Docker SDK.

`conjure run` asks this before it starts anything; importing the SDK (requests,
urllib3, its models) costs more than the question. Hosts the plain socket cannot
reach (ssh://, TLS) are asked through the SDK.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

DEFAULT_HOST = "unix:///var/run/docker.sock"


def ping(docker_host: str | None = None, timeout: float = 5.0) -> None:
    """Return when the engine answers `OK`; raise OSError (or the SDK's error) otherwise."""
    host = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    url = urlparse(host)
    tls = os.environ.get("DOCKER_TLS_VERIFY") or os.environ.get("DOCKER_CERT_PATH")
    address: str | tuple[str, int]
    if url.scheme == "unix":
        family, address = socket.AF_UNIX, url.path
    elif url.scheme in ("tcp", "http") and not tls:
        family, address = socket.AF_INET, (url.hostname or "127.0.0.1", url.port or 2375)
    else:
        _ping_sdk(docker_host)
        return
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in f"{status} ":
        raise OSError(f"{host} answered {status or 'nothing'}")


def _ping_sdk(docker_host: str | None) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
    client.ping()
