"""Secret environment variables: `--env SECRET*=…` values never enter workflow history.

The client splits a run's env: every name starting with SECRET keeps only the marker
`<REDACTED>` in the RunSpec (so the status query, `conjure status`, `ls --json`,
`rerun` and the Temporal Web UI show the marker), and the real values go to the
object store under `secrets/<request id>.json`, a key that the spec holds and only
the machine agent reads when it starts the container. The agent also replaces the
values by the marker in every log line before the line is stored.

Why not a payload codec that encrypts history: the Web UI would show ciphertext for
everything (not just secrets), every client, worker and replay would need the key,
and a lost key would make old histories unreadable. Keeping the values out of
history needs no key management and leaves the rest of history readable.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from conjure.infra.store import Store, StoreError

SECRET_PREFIX = "SECRET"
REDACTED = "<REDACTED>"
SECRETS_ROOT = "secrets"


def is_secret(name: str) -> bool:
    return name.startswith(SECRET_PREFIX)


def split_env(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(env with secret values replaced by the marker, the secret values)."""
    shown: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in env.items():
        if is_secret(name):
            shown[name] = REDACTED
            secret[name] = value
        else:
            shown[name] = value
    return shown, secret


def store_secrets(store: Store, request_id: str, values: dict[str, str]) -> str | None:
    """Keep the values in the store; returns the key the run spec refers to."""
    if not values:
        return None
    key = f"{SECRETS_ROOT}/{request_id}.json"
    if store.local:
        # The folder first, owner-only, so no other user can list or read what lands there.
        folder = Path(store.root) / SECRETS_ROOT
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    store.put_bytes(key, json.dumps(values).encode())
    if store.local:
        os.chmod(store._path(key), 0o600)
    return key


def forget_secrets(store: Store, key: str | None) -> bool:
    """Delete a run's stored values once it is final (a rerun never reads them)."""
    if not key or not key.startswith(SECRETS_ROOT + "/"):
        return False
    try:
        if not store.exists(key):
            return False
        store.rm(key)
    except FileNotFoundError:
        return False
    return True


def shell_exports(values: dict[str, str]) -> str:
    """`export NAME='value'` lines a POSIX shell sources to get exactly these values."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def load_secrets(store: Store, key: str | None) -> dict[str, str]:
    if not key:
        return {}
    try:
        data = json.loads(store.read_bytes(key))
    except (StoreError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def redact(text: str, values: list[str]) -> str:
    for v in values:
        if v and v in text:
            text = text.replace(v, REDACTED)
    return text


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret(k) else v) for k, v in env.items()}
