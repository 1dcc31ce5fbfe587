"""Resources, the store façade of the Python API: list, upload, download and remove what
runs read and write (`conjure ls/upload/cp/rm` are cli/commands/resources.py).

Resources live in the store under `runs/<N>/` (run outputs), `uploads/` (what
users upload) and `public/` (shared datasets). Uploads are the only ones a user
removes; run outputs stay what the run saved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conjure.cli.mounts import RESOURCE_ROOTS
from conjure.infra.errors import ConflictError, ConjureError, NotFoundError, UsageError
from conjure.infra.secrets import SECRETS_ROOT
from conjure.infra.store import BadKey, Entry, Store, StoreError, clean_key

# Readable (conjure cp/ls) but neither mountable nor removable: the runs' code objects,
# e.g. a run's uncommitted diff (`conjure status N` names its key).
READ_ONLY_ROOTS = ("code",)


@dataclass
class Transfer:
    resource: str
    local: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


def resource_key(path: str, what: str = "resource") -> str:
    if path.strip().strip("/").split("/", 1)[0] == SECRETS_ROOT:
        raise ConjureError("secrets are not readable through the CLI")
    try:
        key = clean_key(path.strip().strip("/"))
    except BadKey as e:
        raise UsageError(f"{what}: {e}") from None
    if key.split("/", 1)[0] not in RESOURCE_ROOTS + READ_ONLY_ROOTS:
        raise UsageError(
            f"{what} {path!r} must start with one of {', '.join(r + '/' for r in RESOURCE_ROOTS)}"
        )
    return key


def upload(
    store: Store,
    local: Path,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Transfer:
    """Put a local file or folder under uploads/NAME (NAME: the local name by default)."""
    if not local.exists():
        raise UsageError(f"{local} does not exist")
    name = (name or local.resolve().name).strip().strip("/")
    if name.startswith("uploads/"):
        name = name[len("uploads/") :]
    try:
        key = "uploads/" + clean_key(name)
    except BadKey as e:
        raise UsageError(f"upload name: {e}") from None
    if next(iter(store.walk(key)), None) is not None:
        raise ConflictError(
            f"{key} already exists; remove it with `conjure rm {key}` or pick another NAME"
        )
    t0 = time.monotonic()
    stats = store.put_tree(local, key, progress=progress)
    if stats.files == 0:
        raise ConjureError(f"{local} has no files to upload")
    return Transfer(key, str(local), stats.files, stats.bytes, time.monotonic() - t0, stats.skipped)


def download(
    store: Store,
    resource: str,
    dest: Path,
    progress: Callable[[int], None] | None = None,
    entries: list[Entry] | None = None,
) -> Transfer:
    """Copy a resource (file or folder) to dest; a file into an existing folder keeps its name."""
    key = resource_key(resource)
    entries = list(store.walk(key)) if entries is None else entries
    if not entries:
        raise NotFoundError(f"{resource} does not exist")
    single = len(entries) == 1 and entries[0].key == key
    if single and dest.is_dir():
        dest = dest / Path(key).name
    t0 = time.monotonic()
    try:
        stats = store.get_tree(key, dest, progress=progress, entries=entries)
    except BadKey as e:
        raise ConjureError(str(e)) from None
    return Transfer(key, str(dest), stats.files, stats.bytes, time.monotonic() - t0)


def remove(store: Store, resource: str) -> Transfer:
    """Remove an upload. Run outputs and public datasets are not removable."""
    key = resource_key(resource)
    parts = key.split("/")
    if parts[0] != "uploads" or len(parts) < 2:
        raise UsageError(f"only uploads can be removed (uploads/NAME); {resource!r} is not one")
    entries = list(store.walk(key))
    if not entries:
        raise NotFoundError(f"{resource} does not exist")
    try:
        store.rm(key)
    except FileNotFoundError:
        pass
    return Transfer(key, "", len(entries), sum(e.size for e in entries))


def listing(store: Store, path: str) -> list[Entry]:
    """ls of '' or '/' lists the resource roots; anything else must be below one."""
    if not path.strip("/"):
        return [e for e in store.ls("") if e.key in RESOURCE_ROOTS]
    try:
        return store.ls(resource_key(path))
    except StoreError as e:
        raise ConjureError(str(e)) from None
