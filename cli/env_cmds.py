"""Environment flags of `conjure run`, and `conjure frameworks` / `conjure images`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click.Path turns '' into '.': an empty file name is refused before that."""
    if value is not None and str(value) in ("", "."):
        raise click.BadParameter("the value is empty (a file name is needed)")
    return value


def env_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The environment flags, shared by every command that starts a run."""
    opts = [
        click.option("--apt", "apt", multiple=True, metavar="PKG",
                     help="apt package to install (repeatable)."),
        click.option("--pip", "pip", multiple=True, metavar="REQ",
                     help='pip requirement, e.g. "Pillow>=8.3.2" (repeatable; wins over --pip-req).'),
        click.option("--pip-req", "pip_req", type=click.Path(path_type=Path), metavar="FILE",
                     callback=_not_empty,
                     help="pip requirements file, installed before --pip."),
        click.option("--conda-file", "conda_file", type=click.Path(path_type=Path), metavar="FILE",
                     callback=_not_empty,
                     help="conda environment file (built with micromamba; not with --pip-req)."),
        click.option("--docker-image", "docker_image", metavar="IMAGE",
                     help="base the environment on this image instead of Conjure's."),
        click.option("--framework", "framework", metavar="NAME",
                     help="framework image to start from (see `conjure frameworks`)."),
        click.option("--deps-from-env", "deps_from_env", is_flag=True,
                     help="take the packages of the active virtual or conda environment."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _docker(api_factory: Callable[[], Any]) -> Any:
    import docker

    from conjure.infra.errors import ConjureError

    s = api_factory().settings
    try:
        client = docker.DockerClient(base_url=s.docker_host) if s.docker_host else docker.from_env()
        client.ping()
    except Exception as e:
        raise ConjureError(f"the Docker engine is not reachable ({str(e)[:160]})") from None
    return client


def register_env_commands(cli: click.Group, api_factory: Callable[[], Any]) -> None:
    @cli.command()
    @click.option("--json", "as_json", is_flag=True)
    def frameworks(as_json: bool) -> None:
        """List the framework catalog: the images runs can start from (--framework)."""
        cat = api_factory().frameworks
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

    @cli.group(invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def images(ctx: click.Context, as_json: bool) -> None:
        """List this installation's cached environment and framework images on this
        Docker engine (another installation's on the same engine are not shown)."""
        if ctx.invoked_subcommand is not None:
            return
        from conjure.infra import env_build
        from conjure.infra.installation import installation_id

        api = api_factory()
        found = env_build.list_images(_docker(api_factory), installation_id(api.store))
        if as_json:
            click.echo(json.dumps([i.__dict__ for i in found], indent=2))
            return
        click.echo(f"{'IMAGE':<52} {'KIND':<9} {'FRAMEWORK':<10} {'SIZE':>8}  CREATED")
        total = 0
        for i in found:
            total += i.size
            for tag in i.tags or [i.id]:
                click.echo(
                    f"{tag:<52} {i.kind:<9} {i.framework:<10} {_size(i.size):>8}  {i.created}"
                )
        click.echo(
            f"{len(found)} image(s), {_size(total)} (layers shared with the base image counted in each)"
        )

    @images.command()
    @click.argument("tags", nargs=-1)
    def prune(tags: tuple[str, ...]) -> None:
        """Remove this installation's cached environment images (all of them, or the
        TAGS given); another installation's are never touched."""
        from conjure.infra import env_build
        from conjure.infra.installation import installation_id

        removed, kept = env_build.prune_images(
            _docker(api_factory), list(tags) or None, installation_id(api_factory().store)
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
