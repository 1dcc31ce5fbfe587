"""The Docker engine check without the SDK: the real engine, a missing socket, a stranger."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from conjure.infra.docker_ping import ping


def test_the_real_engine_answers() -> None:
    ping()  # the machine's engine (DOCKER_HOST or /var/run/docker.sock)


def test_missing_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ping(f"unix://{tmp_path}/no-docker.sock")


def test_a_socket_that_is_not_docker_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "other.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\nno")
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        with pytest.raises(OSError, match="404"):
            ping(f"unix://{path}")
    finally:
        t.join(timeout=5)
        server.close()
