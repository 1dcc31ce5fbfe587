"""The web console's token: needed on every request when the console listens off
loopback. It is `console_token`, or one generated once and kept in
`$CONJURE_HOME/console.token` (mode 600), so `conjure up`, the console process and
`conjure console` all agree on it."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from conjure.infra.config import Settings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file(settings: Settings) -> Path:
    return settings.home / "console.token"


def resolve_token(settings: Settings) -> tuple[str | None, bool]:
    """(the token every request needs, or None for none; whether it was generated now)."""
    if settings.console_token:
        return settings.console_token, False
    if is_loopback(settings.console_bind):
        return None, False
    path = token_file(settings)
    try:
        saved = path.read_text().strip()
    except FileNotFoundError:
        saved = ""
    if saved:
        return saved, False
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True
