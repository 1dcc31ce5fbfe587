"""`--mount SRC[:DEST]`: parsing, and where DEST lands in the container."""

from __future__ import annotations

import posixpath

from infra.errors import UsageError
from infra.store import BadKey, clean_key
from workflows.models import MountSpec

RESOURCE_ROOTS = ("runs", "uploads", "public")


def parse_mount(text: str, workdir: str) -> MountSpec:
    """`runs/12/out:/mnt/data` -> MountSpec(source='runs/12/out', dest='/mnt/data').

    DEST may be absolute, relative to the run's working directory, or omitted
    (the source's last path part, in the working directory).
    """
    raw = text.strip()
    if not raw:
        raise UsageError("--mount needs SRC[:DEST], got an empty value")
    scheme, sep, rest = raw.partition("://")
    if sep:
        src_tail, colon, dest = rest.partition(":")
        src = f"{scheme}://{src_tail}"
    else:
        src, colon, dest = raw.partition(":")
    if colon and not dest:
        raise UsageError(f"--mount {text!r}: nothing after ':' (use SRC or SRC:DEST)")
    if ":" in dest:
        raise UsageError(f"--mount {text!r}: too many ':' (use SRC or SRC:DEST)")
    if sep:
        raise UsageError(
            f"--mount {text!r}: bucket sources ({scheme}://) are not supported yet; "
            "use runs/N/..., uploads/... or public/..."
        )
    try:
        src = clean_key(src)
    except BadKey as e:
        raise UsageError(f"--mount {text!r}: {e}") from None
    if src.split("/", 1)[0] not in RESOURCE_ROOTS:
        raise UsageError(
            f"--mount {text!r}: the source must start with one of "
            f"{', '.join(r + '/' for r in RESOURCE_ROOTS)}"
        )
    if src.startswith("runs/"):
        parts = src.split("/")
        if len(parts) < 2 or not parts[1].isdigit():
            raise UsageError(f"--mount {text!r}: expected runs/<run id>[/path]")
    if not dest:
        dest = posixpath.basename(src)
    if not posixpath.isabs(dest):
        dest = posixpath.join(workdir, dest)
    dest = posixpath.normpath(dest)
    if dest in ("/", "/conjure") or any(p == ".." for p in dest.split("/")):
        raise UsageError(f"--mount {text!r}: cannot mount onto {dest}")
    return MountSpec(source=src, dest=dest)
