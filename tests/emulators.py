"""Object-store emulators started by the tests on 127.0.0.1, each on a free port:
moto_server (S3), gcp-storage-emulator (GCS) and Azurite (Azure Blob, npm)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

BIN = Path(sys.executable).parent

# Azurite's well-known development account (public, in Azurite's documentation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port}: {log.read_text()[-2000:]}")


@contextmanager
def _serve(cmd: list[str], port: int, name: str, workdir: Path) -> Iterator[None]:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    try:
        _wait_port(port, proc, name, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def moto(workdir: Path) -> Iterator[str]:
    """An S3 endpoint URL."""
    port = free_port()
    with _serve(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, "moto", workdir
    ):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def gcs(workdir: Path) -> Iterator[str]:
    """A GCS endpoint URL."""
    port = free_port()
    cmd = [
        str(BIN / "gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
    ]
    with _serve(cmd, port, "gcs", workdir):
        yield f"http://127.0.0.1:{port}"


def azurite_binary() -> str:
    found = shutil.which("azurite-blob")
    if not found:
        raise RuntimeError("azurite-blob is not installed: run ./test.sh (npm install -g azurite)")
    return found


@contextmanager
def azurite(workdir: Path) -> Iterator[str]:
    """An Azure Blob connection string."""
    port = free_port()
    cmd = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--inMemoryPersistence",
    ]
    with _serve(cmd, port, "azurite", workdir):
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )


def set_env(values: dict[str, str]) -> dict[str, str | None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    return old


def restore_env(old: dict[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
