"""`conjure upload`, `conjure cp`, `conjure rm`: the resources of the store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conjure.cli.commands.common import api, fmt_bytes

if TYPE_CHECKING:
    from conjure.cli.resources import Transfer


def rate(t: Transfer) -> str:
    return fmt_bytes(t.bytes / t.seconds) + "/s" if t.seconds > 0 else "-"


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
    return f"✨ {verb} {t.files} file(s), {fmt_bytes(t.bytes)} in {t.seconds:.1f}s ({rate(t)})"


@click.command(name="upload")
@click.argument("local_path", type=click.Path(exists=True, path_type=Path))
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def upload_cmd(local_path: Path, name: str | None, as_json: bool) -> None:
    """Upload LOCAL_PATH (a file or folder) to uploads/NAME (default: its name).

    Mount it in a run with `--mount uploads/NAME`.
    """
    from conjure.cli.resources import upload
    from conjure.infra.store import local_files

    s = api().store
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


@click.command(name="cp")
@click.argument("resource")
@click.argument("dest", type=click.Path(path_type=Path), default=".")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cp_cmd(resource: str, dest: Path, as_json: bool) -> None:
    """Download RESOURCE (a file or folder, e.g. runs/12/out) to DEST."""
    from conjure.cli.resources import download, resource_key

    s = api().store
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


@click.command(name="rm")
@click.argument("resource")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rm_cmd(resource: str, as_json: bool) -> None:
    """Remove an upload (uploads/NAME). Run outputs cannot be removed."""
    from conjure.cli.resources import remove

    t = remove(api().store, resource)
    if as_json:
        click.echo(json.dumps({"removed": t.resource, "files": t.files, "bytes": t.bytes}))
        return
    click.echo(f"removed {t.resource} ({t.files} file(s), {fmt_bytes(t.bytes)})", err=True)


COMMANDS = [upload_cmd, cp_cmd, rm_cmd]
