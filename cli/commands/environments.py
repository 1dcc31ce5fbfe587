"""The environments runs start from: `conjure frameworks`, `conjure images [prune]`."""

from __future__ import annotations

import json

import click

from conjure.cli.commands.common import api


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def frameworks(as_json: bool) -> None:
    """List the framework catalog: the images runs can start from (--framework)."""
    cat = api().frameworks
    if as_json:
        click.echo(json.dumps(
            [{"name": f.name, "description": f.description, "pip": f.pip} for f in cat.values()],
            indent=2,
        ))  # fmt: skip
        return
    click.echo(f"{'NAME':<11} {'ADDS':<44} DESCRIPTION")
    for f in cat.values():
        adds = ", ".join(p for p in f.pip if not p.startswith("-")) or "-"
        click.echo(f"{f.name:<11} {adds[:44]:<44} {f.description}")


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """List this installation's cached environment and framework images on this
    Docker engine (another installation's on the same engine are not shown)."""
    if ctx.invoked_subcommand is not None:
        return
    from conjure.cli.preflight import docker_client
    from conjure.infra import env_build
    from conjure.infra.installation import installation_id

    c = api()
    found = env_build.list_images(docker_client(c.settings), installation_id(c.store))
    if as_json:
        click.echo(json.dumps([i.__dict__ for i in found], indent=2))
        return
    click.echo(f"{'IMAGE':<52} {'KIND':<9} {'FRAMEWORK':<10} {'SIZE':>8}  CREATED")
    total = 0
    for i in found:
        total += i.size
        for tag in i.tags or [i.id]:
            click.echo(f"{tag:<52} {i.kind:<9} {i.framework:<10} {_size(i.size):>8}  {i.created}")
    click.echo(
        f"{len(found)} image(s), {_size(total)} (layers shared with the base image counted in each)"
    )


@images.command()
@click.argument("tags", nargs=-1)
def prune(tags: tuple[str, ...]) -> None:
    """Remove this installation's cached environment images (all of them, or the
    TAGS given); another installation's are never touched."""
    from conjure.cli.preflight import docker_client
    from conjure.infra import env_build
    from conjure.infra.installation import installation_id

    c = api()
    removed, kept = env_build.prune_images(
        docker_client(c.settings), list(tags) or None, installation_id(c.store)
    )
    for t in removed:
        click.echo(f"removed {t}")
    for t in kept:
        click.echo(f"kept {t} (in use)", err=True)
    if tags:
        missing = set(tags) - set(removed) - set(kept)
        if missing:
            raise click.ClickException(
                "not Conjure environment images: " + ", ".join(sorted(missing))
            )
    click.echo(f"{len(removed)} image(s) removed", err=True)


COMMANDS = [frameworks, images]
