"""Resources: `conjure upload`, `conjure cp`, `conjure rm` (and the API under them).

Resources live in the store under `runs/<N>/` (run outputs), `uploads/` (what
users upload) and `public/` (shared datasets). Uploads are the only ones a user
removes; run outputs stay what the run saved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from conjure.infra.errors import ConjureError, UsageError
from conjure.infra.secrets import SECRETS_ROOT
from conjure.infra.store import BadKey, Store, StoreError, clean_key, local_files

RESOURCE_ROOTS = ("runs", "uploads", "public")
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

    @property
    def rate(self) -> str:
        return _fmt_bytes(self.bytes / self.seconds) + "/s" if self.seconds > 0 else "-"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


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
        raise ConjureError(
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
    entries: list | None = None,
) -> Transfer:  # type: ignore[type-arg]
    """Copy a resource (file or folder) to dest; a file into an existing folder keeps its name."""
    key = resource_key(resource)
    entries = list(store.walk(key)) if entries is None else entries
    if not entries:
        raise ConjureError(f"{resource} does not exist")
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
        raise ConjureError(f"{resource} does not exist")
    try:
        store.rm(key)
    except FileNotFoundError:
        pass
    return Transfer(key, "", len(entries), sum(e.size for e in entries))


def listing(store: Store, path: str) -> list:  # type: ignore[type-arg]
    """ls of '' or '/' lists the resource roots; anything else must be below one."""
    if not path.strip("/"):
        return [e for e in store.ls("") if e.key in RESOURCE_ROOTS]
    try:
        return store.ls(resource_key(path))
    except StoreError as e:
        raise ConjureError(str(e)) from None


# --- the commands ---------------------------------------------------------------------


@contextmanager
def _progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr (drawn only on a terminal)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _summary(t: Transfer, verb: str) -> str:
    return f"✨ {verb} {t.files} file(s), {_fmt_bytes(t.bytes)} in {t.seconds:.1f}s ({t.rate})"


def register(cli: click.Group, api: Callable[[], object]) -> None:
    """Add upload, cp and rm to the root group; api() gives an AsyncConjure."""

    def store() -> Store:
        return api().store  # type: ignore[attr-defined, no-any-return]

    @cli.command(name="upload")
    @click.argument("local_path", type=click.Path(exists=True, path_type=Path))
    @click.argument("name", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def upload_cmd(local_path: Path, name: str | None, as_json: bool) -> None:
        """Upload LOCAL_PATH (a file or folder) to uploads/NAME (default: its name).

        Mount it in a run with `--mount uploads/NAME`.
        """
        s = store()
        skipped: list[str] = []
        total = sum(p.stat().st_size for _, p in local_files(local_path, skipped))
        with _progress_bar(total, f"uploading {local_path.name}", not as_json) as progress:
            t = upload(s, local_path, name, progress)
        if as_json:
            click.echo(json.dumps(asdict(t), indent=2))
            return
        for path in t.skipped:
            click.echo(f"⚠️  skipped {path}: a link leading outside {local_path}", err=True)
        click.echo(_summary(t, f"Uploaded {t.resource}:"), err=True)
        click.echo(t.resource)

    @cli.command(name="cp")
    @click.argument("resource")
    @click.argument("dest", type=click.Path(path_type=Path), default=".")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def cp_cmd(resource: str, dest: Path, as_json: bool) -> None:
        """Download RESOURCE (a file or folder, e.g. runs/12/out) to DEST."""
        s = store()
        key = resource_key(resource)
        entries = list(s.walk(key))
        total = sum(e.size for e in entries)
        with _progress_bar(total, f"downloading {key}", not as_json) as progress:
            t = download(s, resource, dest, progress, entries)
        if as_json:
            click.echo(json.dumps(asdict(t), indent=2))
            return
        click.echo(f"copied {resource} to {dest} ({t.bytes} bytes)", err=True)
        click.echo(_summary(t, "Downloaded"), err=True)

    @cli.command(name="rm")
    @click.argument("resource")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def rm_cmd(resource: str, as_json: bool) -> None:
        """Remove an upload (uploads/NAME). Run outputs cannot be removed."""
        t = remove(store(), resource)
        if as_json:
            click.echo(json.dumps({"removed": t.resource, "files": t.files, "bytes": t.bytes}))
            return
        click.echo(f"removed {t.resource} ({t.files} file(s), {_fmt_bytes(t.bytes)})", err=True)


def mount_note(st: object) -> str:
    """' (runs/3/data: cached on this machine; uploads/x: downloaded)' for the Mounting line."""
    mounts = getattr(getattr(st, "spec", None), "mounts", [])
    cached = getattr(st, "mounts_cached", [])
    if not mounts or len(cached) != len(mounts):
        return ""
    parts = [
        f"{m.source}: {'cached on this machine' if hit else 'downloaded'}"
        for m, hit in zip(mounts, cached, strict=False)
    ]
    return " (" + "; ".join(parts) + ")"
