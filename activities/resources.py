"""Mounting resources into a run and saving what the run wrote into them.

Each `--mount` source (runs/…, uploads/…, public/… in Conjure's store, or a
bucket URL) is downloaded once into the machine's cache, `cache/mounts/<fp>/data`,
where fp is a digest of the source's listing: every file's path relative to the
source, its size and the store's content tag (ETag, MD5 or mtime). A second run
that mounts the same data on the same machine, under any name, reuses it.

The cache is never written by a run. A folder is mounted as an overlay: the
cached copy is the read-only lower layer and a per-run upper folder takes every
file the run creates or changes there; those files are saved with the run's
outputs, under `runs/<N>/<dest>` (dest relative to the working directory when it
lies inside it, else the absolute path without its leading '/'). A single file is
bound read-only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from conjure.infra.config import Settings
from conjure.infra.store import BadKey, Store, StoreError, clean_key, open_source
from conjure.workflows.models import Bind, MountInput, MountResult

MOUNTS_FILE = "mounts.json"
VOLUME_LABEL = "org.conjure.mount"


class MountError(Exception):
    """A mount that cannot succeed by retrying (the source is missing or unreadable)."""


def _wait(fn: Callable[[], Any], heartbeat: Callable[..., None], details: Callable[[], Any]) -> Any:
    """Run fn in a thread, heartbeating from the activity's own thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as ex:
        fut = ex.submit(fn)
        while True:
            try:
                return fut.result(timeout=5)
            except FutureTimeout:
                heartbeat(details())


def mount_all(
    settings: Settings,
    store: Store,
    machine_dir: Path,
    run_dir: Path,
    inp: MountInput,
    heartbeat: Callable[..., None],
) -> MountResult:
    result = MountResult()
    records = []
    for i, m in enumerate(inp.mounts):
        try:
            src_store, key, entries = open_source(m.source, store, settings)
        except (StoreError, BadKey) as e:
            raise MountError(f"mount source {m.source}: {e}") from None
        if not entries:
            raise MountError(f"mount source {m.source} does not exist")
        single = len(entries) == 1 and entries[0].key == key
        listing = [
            (e.key[len(key) :].lstrip("/") if key else e.key, e.size, e.tag) for e in entries
        ]
        fp = hashlib.sha256(json.dumps([single, listing]).encode()).hexdigest()[:32]
        cache = machine_dir / "cache" / "mounts"
        root = cache / fp
        data = root / "data"
        hit = (root / ".complete").exists()
        moved = [0]
        lock = threading.Lock()

        def progress(n: int, lock: threading.Lock = lock, moved: list[int] = moved) -> None:
            with lock:
                moved[0] += n

        if not hit:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{fp}.{uuid.uuid4().hex}"
            _wait(
                functools.partial(
                    src_store.get_tree, key, tmp / "data", progress=progress, entries=entries
                ),
                heartbeat,
                functools.partial(_mount_progress, i, moved),
            )
            (tmp / ".complete").write_text(m.source)
            if root.exists() and not (root / ".complete").exists():
                shutil.rmtree(root, ignore_errors=True)  # left by a crashed attempt
            try:
                os.rename(tmp, root)
            except OSError:  # a concurrent run on this machine finished it first
                shutil.rmtree(tmp, ignore_errors=True)
        os.utime(root)  # last use, for whoever prunes the cache
        if single:
            bind = Bind(host=str(data), container=m.dest, read_only=True)
        else:
            upper = run_dir / "mounts" / str(i) / "upper"
            work = run_dir / "mounts" / str(i) / "work"
            for d in (upper, work):
                shutil.rmtree(d, ignore_errors=True)  # a retried attempt starts clean
                d.mkdir(parents=True)
            bind = Bind(
                host=str(data),
                container=m.dest,
                read_only=False,
                overlay_upper=str(upper),
                overlay_work=str(work),
            )
            records.append({"dest": m.dest, "upper": str(upper)})
        result.binds.append(bind)
        result.cached.append(hit)
        result.sizes.append(sum(e.size for e in entries))
    (run_dir / MOUNTS_FILE).write_text(json.dumps(records))
    return result


def _mount_progress(i: int, moved: list[int]) -> dict[str, int]:
    return {"mount": i, "bytes": moved[0]}


def overlay_mount(
    client: docker.DockerClient, name: str, bind: Bind, labels: dict[str, str]
) -> Mount:
    """A docker Mount of an overlay volume: bind.host below, bind.overlay_upper on top."""
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(
            name=name,
            driver="local",
            driver_opts={
                "type": "overlay",
                "device": "overlay",
                "o": f"lowerdir={bind.host},upperdir={bind.overlay_upper},"
                f"workdir={bind.overlay_work}",
            },
            labels={**labels, VOLUME_LABEL: "1"},
        )
    return Mount(bind.container, name, type="volume")


def remove_volumes(client: docker.DockerClient, labels: dict[str, str]) -> None:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()] + [VOLUME_LABEL]}
    for vol in client.volumes.list(filters=filters):
        try:
            vol.remove(force=True)
        except docker.errors.APIError:
            pass


def output_prefix(run_id: int, dest: str, workdir: str) -> str:
    """Where files written into a mount at dest are saved: runs/N/<dest…>."""
    p = PurePosixPath(dest)
    try:
        rel = p.relative_to(workdir).as_posix()
    except ValueError:
        rel = p.as_posix().lstrip("/")
    return clean_key(f"runs/{run_id}/{rel}")


def mount_writes(run_dir: Path, run_id: int, workdir: str) -> list[tuple[Path, str]]:
    """(file, key) for every regular file a run created or changed inside its mounts.

    Only the overlay's upper folder is read: whiteouts (deletions) are character
    devices and symlinks are not files, so neither is ever followed or uploaded.
    """
    f = run_dir / MOUNTS_FILE
    if not f.exists():
        return []
    out = []
    for rec in json.loads(f.read_text()):
        upper = Path(rec["upper"])
        prefix = output_prefix(run_id, rec["dest"], workdir)
        for dirpath, _dirs, files in os.walk(upper):
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = path.relative_to(upper).as_posix()
                try:
                    out.append((path, clean_key(f"{prefix}/{rel}")))
                except BadKey:
                    continue
    return out
