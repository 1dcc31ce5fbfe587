"""Serving the console with uvicorn: `conjure console` in the foreground, and the
process `conjure up` starts in the background (infra/stack.py runs this same
command)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from conjure.infra.config import Settings
from conjure.infra.console_token import is_loopback, resolve_token, token_file
from conjure.infra.errors import ConjureError, UsageError


def login_url(settings: Settings, token: str | None) -> str:
    return f"{settings.console_url}/login?token={token}" if token else settings.console_url


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, opened before anything else, so a taken port or an address
    this machine does not have is one line, not a traceback from the server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = {
            errno.EADDRINUSE: "the port is taken by another process",
            errno.EADDRNOTAVAIL: "this machine has no such address",
        }.get(e.errno or 0, e.strerror or str(e))
        raise ConjureError(
            f"the console cannot listen on {host}:{port}: {why} (set console_port / console_bind)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, say: Callable[[str], None]) -> None:
    """Run the console until interrupted."""
    import uvicorn

    from conjure.cli.console.app import create_app

    if not 0 < settings.console_port < 65536:
        raise UsageError(f"console_port {settings.console_port} is not a port")
    token, generated = resolve_token(settings)
    sock = bind_socket(settings.console_bind, settings.console_port)
    if token is None:
        say(f"✨ Conjure console: {settings.console_url} (no login: it answers on loopback only)")
    else:
        where = "generated, kept in " + str(token_file(settings)) if generated else "its token"
        say(f"✨ Conjure console: {settings.console_url} (log in with {where})")
        say(f"   token: {token}")
        say(f"   open:  {login_url(settings, token)}")
    if not is_loopback(settings.console_bind) and settings.console_bind in ("0.0.0.0", "::"):
        say("   listening on every address of this machine; use TLS in front of it")
    config = uvicorn.Config(
        create_app(settings, token=token),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
