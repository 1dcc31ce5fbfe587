"""Conjure's object store: code archives, uploads, run outputs, logs and metrics.

One small interface over fsspec, so the local directory (the default), S3, GCS
and Azure Blob all behave the same. Keys are '/'-separated paths below the
store's root; a key with '..', an absolute path or an empty part is refused, so
nothing outside the store prefix is ever read or written.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec


class StoreError(Exception):
    pass


class BadKey(StoreError):
    pass


_PROTOCOL_EXTRAS = {"s3": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure"}


def clean_key(key: str) -> str:
    """Normalise a key and refuse anything that could escape the store prefix."""
    if not isinstance(key, str) or not key.strip():
        raise BadKey("empty resource path")
    if key.startswith("/"):
        raise BadKey(f"resource path {key!r} must not be absolute")
    parts = [p for p in key.strip().rstrip("/").split("/")]
    for p in parts:
        if p in ("", ".", ".."):
            raise BadKey(f"resource path {key!r} has an empty, '.' or '..' part")
        if "\x00" in p or "\\" in p:
            raise BadKey(f"resource path {key!r} has a forbidden character")
    return "/".join(parts)


@dataclass
class Entry:
    key: str
    size: int
    is_dir: bool


class Store:
    def __init__(self, url: str, **storage_options: object) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        except ImportError as e:
            proto = self.url.split("://", 1)[0]
            extra = _PROTOCOL_EXTRAS.get(proto, proto)
            raise StoreError(
                f"the store {self.url} needs an extra: pip install 'conjure[{extra}]' ({e})"
            ) from None
        self.root = root.rstrip("/")
        self.local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    # --- paths ----------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root}/{clean_key(key)}"

    def _key(self, path: str) -> str:
        path = path.rstrip("/")
        root = self.root.lstrip("/") if not path.startswith("/") else self.root
        if path == root:
            return ""
        return posixpath.relpath(path, root)

    # --- reads ----------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def is_dir(self, key: str) -> bool:
        return bool(self.fs.isdir(self._path(key)))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise StoreError(f"{key} does not exist") from None

    def ls(self, prefix: str = "") -> list[Entry]:
        """The entries directly below prefix; a file lists as itself."""
        path = self._path(prefix) if prefix else self.root
        try:
            if prefix and self.fs.isfile(path):
                return [Entry(clean_key(prefix), int(self.fs.info(path).get("size") or 0), False)]
            infos = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            raise StoreError(f"{prefix or '/'} does not exist") from None
        out = [
            Entry(self._key(i["name"]), int(i.get("size") or 0), i.get("type") == "directory")
            for i in infos
        ]
        return sorted((e for e in out if e.key), key=lambda e: e.key)

    def walk(self, prefix: str) -> Iterator[Entry]:
        """Every file at or below prefix (a file prefix yields itself)."""
        path = self._path(prefix)
        if self.fs.isfile(path):
            info = self.fs.info(path)
            yield Entry(clean_key(prefix), int(info.get("size") or 0), False)
            return
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return
        for name, info in sorted(found.items()):
            if info.get("type") == "directory":
                continue
            yield Entry(self._key(name), int(info.get("size") or 0), False)

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        self.fs.get_file(self._path(key), str(tmp))
        os.replace(tmp, dest)

    def get_tree(self, prefix: str, dest: Path) -> int:
        """Download a file or everything below a prefix into dest; returns bytes."""
        total = 0
        base = clean_key(prefix)
        for entry in self.walk(base):
            rel = entry.key[len(base) :].lstrip("/")
            target = dest / rel if rel else dest
            self.get_file(entry.key, target)
            total += entry.size
        return total

    # --- writes ---------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.local:
            # Atomic on a local disk, so a reader following logs never sees half a chunk.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=str(Path(path).parent), prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def put_file(self, local: Path, key: str) -> None:
        path = self._path(key)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.part-{os.getpid()}"
            self.fs.put_file(str(local), tmp)
            os.replace(tmp, path)
        else:
            self.fs.put_file(str(local), path)

    def put_content_addressed(self, local: Path, prefix: str, suffix: str) -> tuple[str, bool]:
        """Upload local under prefix/<sha256><suffix> unless it is there; (key, uploaded)."""
        digest = sha256_file(local)
        key = f"{prefix}/{digest}{suffix}"
        if self.exists(key):
            return key, False
        self.put_file(local, key)
        return key, True

    def rm(self, key: str) -> None:
        self.fs.rm(self._path(key), recursive=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def open_store(url: str) -> Store:
    return Store(url)
