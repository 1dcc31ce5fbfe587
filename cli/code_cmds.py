"""`conjure diff`: the uncommitted changes a run was submitted with."""

from __future__ import annotations

import asyncio
import sys

import click

from conjure.cli.api import AsyncConjure, AsyncRun
from conjure.infra.config import get_settings


@click.command()
@click.argument("run_id", type=int)
def diff(run_id: int) -> None:
    """Print the uncommitted changes run RUN_ID was submitted with, as a patch
    (`git apply` takes it): `conjure diff 12 > changes.patch`."""
    patch = asyncio.run(AsyncRun(AsyncConjure(get_settings()), run_id).diff())
    if patch is None:
        click.echo(f"run {run_id} had no uncommitted changes", err=True)
        return
    sys.stdout.buffer.write(patch)
    sys.stdout.flush()


COMMANDS = [diff]
