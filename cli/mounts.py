"""`--mount SRC[:DEST]`: parsing, and where DEST lands in the container."""

from __future__ import annotations

import posixpath

from conjure.cli.checks import check_value, reserved_destination
from conjure.infra.errors import UsageError
from conjure.infra.store import BUCKET_SCHEMES, BadKey, clean_key, split_bucket_url
from conjure.workflows.models import MountSpec

RESOURCE_ROOTS = ("runs", "uploads", "public")


def parse_mount(text: str, workdir: str) -> MountSpec:
    """`runs/12/out:/mnt/data` -> MountSpec(source='runs/12/out', dest='/mnt/data').

    SRC is runs/N[/path], uploads/…, public/… or a bucket: s3://bucket/path,
    gs://bucket/path, az://container/path.
    DEST may be absolute, relative to the run's working directory, or omitted
    (the source's last path part, in the working directory).
    """
    raw = text.strip()
    if not raw:
        raise UsageError("--mount needs SRC[:DEST], got an empty value")
    check_value("mount", text)  # a newline inside is an error, never dropped
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
        if scheme not in BUCKET_SCHEMES:
            raise UsageError(
                f"--mount {text!r}: unknown scheme {scheme}://; buckets are "
                + ", ".join(s + "://bucket/path" for s in BUCKET_SCHEMES)
            )
        try:
            _, bucket, key = split_bucket_url(src)
        except BadKey as e:
            raise UsageError(f"--mount {text!r}: {e}") from None
        src = f"{scheme}://{bucket}" + (f"/{key}" if key else "")
        if not dest:
            dest = posixpath.basename(key) or bucket
    else:
        try:
            src = clean_key(src)
        except BadKey as e:
            raise UsageError(f"--mount {text!r}: {e}") from None
    if not sep and src.split("/", 1)[0] not in RESOURCE_ROOTS:
        raise UsageError(
            f"--mount {text!r}: the source must start with one of "
            f"{', '.join(r + '/' for r in RESOURCE_ROOTS)}"
        )
    if not sep and src.startswith("runs/"):
        parts = src.split("/")
        if len(parts) < 2 or not parts[1].isdigit():
            raise UsageError(f"--mount {text!r}: expected runs/<run id>[/path]")
    if not dest:
        dest = posixpath.basename(src)
    if not posixpath.isabs(dest):
        dest = posixpath.join(workdir, dest)
    if any(p == ".." for p in dest.split("/")) or "\x00" in dest:
        raise UsageError(f"--mount {text!r}: the destination must not contain '..'")
    dest = posixpath.normpath(dest)
    if any(p == ".." for p in dest.split("/")):
        raise UsageError(f"--mount {text!r}: cannot mount onto {dest}")
    reserved = reserved_destination(dest)
    if reserved is not None:
        what = "the run's workspace root" if reserved == "/conjure" else reserved
        where = "" if reserved == "/" else f" ({what} is reserved)"
        raise UsageError(f"--mount {text!r}: cannot mount onto {dest}{where}")
    return MountSpec(source=src, dest=dest)
