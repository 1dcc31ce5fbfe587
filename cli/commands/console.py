"""`conjure console`: the web console in the foreground."""

from __future__ import annotations

from typing import Any

import click


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port (setting console_port, 8234).")
@click.option("--bind", metavar="ADDRESS", help="Address to listen on (console_bind, 127.0.0.1).")
@click.option(
    "--token", metavar="TOKEN", help="Token every request needs (console_token); off loopback "
    "one is generated if none is set.",
)  # fmt: skip
def console(port: int | None, bind: str | None, token: str | None) -> None:
    """Run the web console in the foreground, against the configured Temporal and store.

    `conjure up` starts it in the background on http://127.0.0.1:8234.
    """
    from conjure.cli.console.server import serve
    from conjure.infra.config import get_settings

    settings = get_settings()
    update: dict[str, Any] = {}
    if port is not None:
        update["console_port"] = port
    if bind is not None:
        if not bind.strip():
            raise click.BadParameter("empty address", param_hint="--bind")
        update["console_bind"] = bind.strip()
    if token is not None:
        if not token.strip():
            raise click.BadParameter("empty token", param_hint="--token")
        update["console_token"] = token.strip()
    if update:
        settings = settings.model_copy(update=update)
    serve(settings, lambda msg: click.echo(msg, err=True))


COMMANDS = [console]
