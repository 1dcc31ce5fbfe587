"""Conjure's object store: code archives, uploads, run outputs, logs and metrics.

One small interface over fsspec, so the local directory (the default), S3, GCS
and Azure Blob all behave the same. Keys are '/'-separated paths below the
store's root; a key with '..', an absolute path or an empty part is refused, so
nothing outside the store prefix is ever read or written. Listings are checked
the same way: an object whose name does not clean (a bucket can hold a key
literally named `a/../../b`) is skipped, never followed.

Transfers stream: files move in blocks (multipart uploads, ranged downloads in
parallel for large objects), never whole in memory, and trees move many files
at once (`transfer_workers`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec

if TYPE_CHECKING:
    from conjure.infra.config import Settings


class StoreError(Exception):
    pass


class BadKey(StoreError):
    pass


_PROTOCOL_EXTRAS = {"s3": "aws", "gs": "gcp", "gcs": "gcp", "az": "azure", "abfs": "azure"}
BUCKET_SCHEMES = ("s3", "gs", "az")

# Files at least this big move one at a time, each in parallel parts of RANGE_SIZE
# (ranged reads down; multipart up), so memory stays near workers x RANGE_SIZE.
LARGE_FILE = 32 << 20
RANGE_SIZE = 16 << 20
PART_WORKERS = 8
S3_PART_SIZE = 8 << 20  # boto3's default; S3's smallest part is 5 MiB

Progress = Callable[[int], None]  # called with the bytes just moved


def clean_key(key: str) -> str:
    """Normalise a key and refuse anything that could escape the store prefix."""
    if not isinstance(key, str) or not key.strip():
        raise BadKey("empty resource path")
    if key.startswith("/"):
        raise BadKey(f"resource path {key!r} must not be absolute")
    parts = list(key.strip().rstrip("/").split("/"))
    for p in parts:
        if p in ("", ".", ".."):
            raise BadKey(f"resource path {key!r} has an empty, '.' or '..' part")
        if "\x00" in p or "\\" in p:
            raise BadKey(f"resource path {key!r} has a forbidden character")
    return "/".join(parts)


def safe_join(root: Path, rel: str, checked: set[Path] | None = None) -> Path:
    """root/rel for a clean rel, refusing to write through a symlinked folder."""
    parts = clean_key(rel).split("/")
    p = root
    for part in parts[:-1]:
        p = p / part
        if checked is not None and p in checked:
            continue
        if checked is not None:
            checked.add(p)
        if p.is_symlink():
            raise BadKey(f"{p} is a symlink: refusing to write through it")
    return p / parts[-1]


@dataclass
class Entry:
    key: str
    size: int
    is_dir: bool
    tag: str = ""  # what the store says identifies the content (ETag, md5, mtime)


@dataclass
class TransferStats:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # local paths left out (symlinks out)


def _content_tag(info: dict[str, Any]) -> str:
    settings = info.get("content_settings")  # Azure: an MD5 of the content when it has one
    md5 = settings.get("content_md5") if settings is not None and hasattr(settings, "get") else None
    if md5:
        return bytes(md5).hex()
    for k in (
        "ETag",
        "etag",
        "md5Hash",
        "crc32c",
        "content_md5",
        "mtime",
        "LastModified",
        "last_modified",
        "updated",
    ):
        v = info.get(k)
        if v:
            return str(v).strip('"')
    return ""


class Store:
    def __init__(self, url: str, workers: int = 16, **storage_options: object) -> None:
        self.url = url.rstrip("/")
        self.workers = max(1, workers)
        self.options = storage_options
        if self.url.split("://", 1)[0] in ("gs", "gcs") and storage_options.get("endpoint_url"):
            # An emulator answers the JSON API only: keep gcsfs from probing the bucket's
            # layout over gRPC first (a minute's timeout per bucket).
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **storage_options)
        except ImportError as e:
            proto = self.url.split("://", 1)[0]
            extra = _PROTOCOL_EXTRAS.get(proto, proto)
            raise StoreError(
                f"the store {self.url} needs an extra: pip install 'conjure[{extra}]' ({e})"
            ) from None
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols
        self.s3 = "s3" in protocols
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            self.real_root = os.path.realpath(self.root)
            self._inside: set[str] = {self.root}
            self._made: set[str] = set()

    # --- paths ----------------------------------------------------------------------

    def _path(self, key: str, allow_root: bool = False) -> str:
        """The backend path of a key; '' (the root itself) only where allow_root says."""
        path = f"{self.root}/{clean_key(key)}" if key or not allow_root else self.root
        if self.local and path != self.root:
            # The folder is resolved once (a link planted there could lead out of the
            # store); the file itself must not be a link.
            self._check_folder(path, key)
            if os.path.islink(path):
                raise BadKey(f"resource path {key!r} is a link")
        return path

    def _key(self, path: str) -> str | None:
        """The key of a listed path, or None when it is not a clean key below root."""
        path = path.rstrip("/")
        root = self.root if path.startswith("/") else self.root.lstrip("/")
        if path == root:
            return ""
        if root and not path.startswith(root + "/"):
            return None
        rel = path[len(root) + 1 :] if root else path
        try:
            return clean_key(rel)
        except BadKey:
            return None

    # --- reads ----------------------------------------------------------------------

    def _fresh(self) -> None:
        """Remote listings are cached by fsspec: another process may have written since."""
        if not self.local:
            self.fs.invalidate_cache()

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def is_dir(self, key: str) -> bool:
        return bool(self.fs.isdir(self._path(key)))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise StoreError(f"{key} does not exist") from None

    def open(self, key: str) -> IO[bytes]:
        """A file of the store opened for a streaming read (the console's downloads)."""
        self._fresh()
        try:
            return self.fs.open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise StoreError(f"{key} does not exist") from None

    def ls(self, prefix: str = "") -> list[Entry]:
        """The entries directly below prefix; a file lists as itself."""
        path = self._path(prefix) if prefix else self.root
        self._fresh()
        try:
            if prefix and self.fs.isfile(path):
                return [Entry(clean_key(prefix), int(self.fs.info(path).get("size") or 0), False)]
            infos = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            raise StoreError(f"{prefix or '/'} does not exist") from None
        own = clean_key(prefix) if prefix else ""
        out = []
        for info in infos:
            key = self._key(info["name"])
            if key is None or (key == "" and info.get("type") == "directory"):
                continue
            if self.local and info.get("islink"):
                continue  # a link planted in the store is neither listed nor followed
            is_dir = info.get("type") == "directory" and key != own
            out.append(Entry(key, int(info.get("size") or 0), is_dir, _content_tag(info)))
        if not out and own and not self.fs.exists(path):
            raise StoreError(f"{prefix} does not exist")
        return sorted(out, key=lambda e: e.key)

    def walk(self, prefix: str) -> Iterator[Entry]:
        """Every file at or below prefix (a file prefix yields itself); '' is the root."""
        base = clean_key(prefix) if prefix else ""
        path = self._path(base, allow_root=True)
        if self.local:
            yield from self._walk_local(base, path)
            return
        self._fresh()
        if base and self.fs.isfile(path):
            info = self.fs.info(path)
            yield Entry(base, int(info.get("size") or 0), False, _content_tag(info))
            return
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return
        for name, info in sorted(found.items()):
            if info.get("type") == "directory":
                continue
            key = self._key(name)
            if not key or (base and not key.startswith(base + "/")):
                continue  # a name that does not clean, or outside the prefix: never used
            if self.local and os.path.islink(name):
                continue  # the local store holds no links; one planted there is not followed
            yield Entry(key, int(info.get("size") or 0), False, _content_tag(info))

    def _walk_local(self, base: str, path: str) -> Iterator[Entry]:
        """os.walk without following links: a link planted in the store is never used."""
        st = os.lstat(path) if os.path.lexists(path) else None
        if st is None:
            return
        if stat.S_ISREG(st.st_mode):
            if base:
                yield Entry(base, st.st_size, False, str(st.st_mtime_ns))
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        found = []
        for dirpath, _dirnames, filenames in os.walk(path):
            rel_dir = os.path.relpath(dirpath, path)
            for name in filenames:
                try:
                    fst = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if not stat.S_ISREG(fst.st_mode):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                try:
                    key = clean_key(f"{base}/{rel}" if base else rel)
                except BadKey:
                    continue
                found.append(Entry(key, fst.st_size, False, str(fst.st_mtime_ns)))
        yield from sorted(found, key=lambda e: e.key)

    def get_file(
        self,
        key: str,
        dest: Path,
        size: int = -1,
        progress: Progress | None = None,
        _made: set[Path] | None = None,
    ) -> None:
        if _made is None or dest.parent not in _made:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if _made is not None:
                _made.add(dest.parent)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")
        src = self._path(key)
        try:
            if self.local:
                shutil.copyfile(src, tmp, follow_symlinks=False)
            elif size >= LARGE_FILE:
                self._get_ranges(src, tmp, size, progress)
                progress = None
            else:
                self.fs.get_file(src, str(tmp))
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        if progress:
            progress(size if size >= 0 else dest.stat().st_size)

    def _get_ranges(self, src: str, tmp: Path, size: int, progress: Progress | None) -> None:
        """Download one large object as parallel ranged reads, each written in place."""
        with open(tmp, "wb") as f:
            f.truncate(size)
        fd = os.open(tmp, os.O_WRONLY)
        try:

            def one(start: int) -> None:
                end = min(start + RANGE_SIZE, size)
                data = self.fs.cat_file(src, start=start, end=end)
                if len(data) != end - start:
                    raise StoreError(f"short read of {src} at {start}")
                os.pwrite(fd, data, start)
                if progress:
                    progress(len(data))

            with ThreadPoolExecutor(max_workers=min(self.workers, PART_WORKERS)) as pool:
                list(pool.map(one, range(0, size, RANGE_SIZE)))
        finally:
            os.close(fd)

    def get_tree(
        self,
        prefix: str,
        dest: Path,
        progress: Progress | None = None,
        entries: list[Entry] | None = None,
    ) -> TransferStats:
        """Download a file or everything below a prefix into dest."""
        base = clean_key(prefix) if prefix else ""
        entries = list(self.walk(base)) if entries is None else entries
        if self.local and len(entries) > 1 and not os.path.lexists(dest):
            return self._get_tree_local(base, entries, dest, progress)
        jobs: list[tuple[Entry, Path]] = []
        checked: set[Path] = set()
        made: set[Path] = set()
        for entry in entries:
            rel = entry.key[len(base) :].lstrip("/") if base else entry.key
            jobs.append((entry, safe_join(dest, rel, checked) if rel else dest))
        stats = TransferStats()
        small = [j for j in jobs if j[0].size < LARGE_FILE or self.local]
        large = [j for j in jobs if j[0].size >= LARGE_FILE and not self.local]

        def one(job: tuple[Entry, Path]) -> int:
            entry, target = job
            self.get_file(entry.key, target, entry.size, progress, made)
            return entry.size

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for n in pool.map(one, small):
                stats.files += 1
                stats.bytes += n
        for job in large:  # each one already moves in parallel ranges
            stats.bytes += one(job)
            stats.files += 1
        return stats

    def _local_src(self, key: str) -> str:
        """The path of a listed key on the local store (its folder checked once)."""
        path = f"{self.root}/{clean_key(key)}"
        self._check_folder(path, key)
        return path

    def _check_folder(self, path: str, key: str) -> None:
        """The folder of a local path must resolve inside the store (checked once)."""
        parent = os.path.dirname(path)
        if parent not in self._inside:
            real = os.path.realpath(parent)
            if real != self.real_root and not real.startswith(self.real_root + os.sep):
                raise BadKey(f"resource path {key!r} leads outside the store")
            self._inside.add(parent)

    def _get_tree_local(
        self, base: str, entries: list[Entry], dest: Path, progress: Progress | None
    ) -> TransferStats:
        """A folder to a new local folder: copied into a staging folder beside dest,
        which then takes dest's name at once (no half tree is ever seen at dest)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = f"{dest.parent}/.{dest.name}.part-{uuid.uuid4().hex[:12]}"
        os.mkdir(stage)
        stats = TransferStats()
        try:
            made = {stage}
            for entry in entries:
                rel = entry.key[len(base) :].lstrip("/") if base else entry.key
                target = f"{stage}/{clean_key(rel)}"
                folder = os.path.dirname(target)
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                n = _copy_nofollow(self._local_src(entry.key), target)
                stats.files += 1
                stats.bytes += n
                if progress:
                    progress(n)
            os.rename(stage, dest)
        finally:
            if os.path.lexists(stage):
                shutil.rmtree(stage, ignore_errors=True)
        return stats

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

    def put_file(self, local: Path, key: str, progress: Progress | None = None) -> int:
        path = self._path(key)
        size = os.stat(local).st_size
        if self.local:
            parent = os.path.dirname(path)
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            tmp = f"{path}.part-{os.getpid()}-{threading.get_ident()}"
            try:
                shutil.copyfile(local, tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        elif self.s3:
            # s3fs: multipart above 2 x chunksize, its parts uploaded concurrently.
            self.fs.put_file(
                str(local),
                path,
                chunksize=S3_PART_SIZE,
                max_concurrency=min(self.workers, PART_WORKERS),
            )
        else:
            # gcsfs/adlfs stream the file in blocks (resumable / block uploads).
            self.fs.put_file(str(local), path)
        if progress:
            progress(size)
        return size

    def put_tree(self, local: Path, key: str, progress: Progress | None = None) -> TransferStats:
        """Upload a file or a folder to key. Symlinks are resolved: one that leads
        outside the folder, or to something not a regular file, is left out."""
        key = clean_key(key)
        stats = TransferStats()
        if self.local and local.is_dir():
            done = self._put_tree_local(local, key, progress, stats)
            if done is not None:
                return done
        small: list[tuple[Path, str]] = []
        large: list[tuple[Path, str]] = []
        for rel, path in local_files(local, stats.skipped):
            job = (path, f"{key}/{rel}" if rel else key)
            big = not self.local and path.stat().st_size >= LARGE_FILE
            (large if big else small).append(job)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for n in pool.map(lambda j: self.put_file(j[0], j[1], progress), small):
                stats.files += 1
                stats.bytes += n
        for path, k in large:  # each one already moves in parallel parts
            stats.bytes += self.put_file(path, k, progress)
            stats.files += 1
        return stats

    def _put_tree_local(
        self, local: Path, key: str, progress: Progress | None, stats: TransferStats
    ) -> TransferStats | None:
        """A folder to a new key of the local store: copied into a staging folder in the
        store, which then takes the key's name at once. None when the key exists (the
        files are then written one by one, over what is there)."""
        final = self._path(key)
        if os.path.lexists(final):
            return None
        files = list(local_files(local, stats.skipped))
        for rel, _ in files:
            clean_key(rel)  # a name that could not be a key: refused before anything moves
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        stage = f"{parent}/.{os.path.basename(final)}.part-{uuid.uuid4().hex[:12]}"
        os.mkdir(stage)
        try:
            made = {stage}
            for rel, path in files:
                target = f"{stage}/{rel}"
                folder = os.path.dirname(target)
                if folder not in made:
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                n = _copy_nofollow(str(path), target)
                stats.files += 1
                stats.bytes += n
                if progress:
                    progress(n)
            if not files:
                return stats
            try:
                os.rename(stage, final)
            except OSError:  # another writer made the key meanwhile: write over it
                return None
            self._made.clear()
        finally:
            if os.path.lexists(stage):
                shutil.rmtree(stage, ignore_errors=True)
        return stats

    def put_content_addressed(self, local: Path, prefix: str, suffix: str) -> tuple[str, bool]:
        """Upload local under prefix/<sha256><suffix> unless it is there; (key, uploaded)."""
        digest = sha256_file(local)
        key = f"{prefix}/{digest}{suffix}"
        if self.exists(key):
            return key, False
        self.put_file(local, key)
        return key, True

    def rm(self, key: str) -> None:
        self.fs.rm(self._path(clean_key(key)), recursive=True)
        if self.local:
            self._made.clear()
            self._inside = {self.root}
        else:
            self.fs.invalidate_cache()


def local_files(root: Path, skipped: list[str]) -> Iterator[tuple[str, Path]]:
    """(relative key, path) of every regular file at or below root; '' for a file root.

    Symlinks are resolved; one whose target is outside root (or not a regular file)
    is reported in skipped, never read. A linked folder is not followed.
    """
    if root.is_file():
        yield "", root.resolve()
        return
    real_root = root.resolve()
    pending = [(str(real_root), "")]
    while pending:
        folder, rel = pending.pop()
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda e: e.name)
        subfolders = []
        for e in found:
            name = f"{rel}/{e.name}" if rel else e.name
            try:
                if not e.is_symlink():
                    if e.is_dir(follow_symlinks=False):
                        subfolders.append((e.path, name))
                    elif e.is_file(follow_symlinks=False):
                        yield name, Path(e.path)
                    else:
                        skipped.append(e.path)  # a socket, fifo or device
                    continue
                if e.is_dir():
                    skipped.append(e.path)  # a linked folder is not followed
                    continue
                target = Path(e.path).resolve(strict=True)
            except (OSError, RuntimeError):
                skipped.append(e.path)
                continue
            if not target.is_relative_to(real_root) or not target.is_file():
                skipped.append(e.path)
                continue
            yield name, target
        pending.extend(reversed(subfolders))


def _copy_nofollow(src: str, dst: str) -> int:
    """Copy one file in the kernel (sendfile); src must not be a link. Returns its size."""
    try:
        fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadKey(f"{src} is a link") from None
        raise
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            copied = 0
            while True:
                try:
                    n = os.sendfile(fout, fin, copied, 1 << 30)
                except OSError as e:
                    if copied or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    with open(fin, "rb", closefd=False) as r, open(fout, "wb", closefd=False) as w:
                        shutil.copyfileobj(r, w, 1 << 20)
                        return w.tell()
                if n == 0:
                    return copied
                copied += n
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- which store, with which options ----------------------------------------------------


def storage_options(protocol: str, settings: Settings | None, anon: bool = False) -> dict[str, Any]:
    """fsspec options for a protocol from the settings (endpoints, credentials)."""
    opts: dict[str, Any] = {}
    if settings is None:
        return {"anon": True} if anon and protocol == "s3" else opts
    if protocol == "s3":
        if settings.s3_endpoint_url:
            opts["endpoint_url"] = settings.s3_endpoint_url
        if anon:
            opts["anon"] = True
    elif protocol in ("gs", "gcs"):
        if settings.gcs_endpoint_url:
            opts["endpoint_url"] = settings.gcs_endpoint_url
            opts["token"] = "anon"  # emulators take no credentials
        if anon:
            opts["token"] = "anon"
    elif protocol in ("az", "abfs"):
        if settings.azure_connection_string and not anon:
            opts["connection_string"] = settings.azure_connection_string
        elif settings.azure_account_name:
            opts["account_name"] = settings.azure_account_name
        if anon:
            opts["anon"] = True
    return opts


def open_store(url: str, settings: Settings | None = None) -> Store:
    """The store at url, with endpoint settings and `store_options` from settings."""
    proto = url.split("://", 1)[0] if "://" in url else "file"
    opts = storage_options(proto, settings)
    if settings is not None:
        if settings.store_url and url.rstrip("/") == settings.store.rstrip("/"):
            opts.update(settings.store_options)
        return Store(url, workers=settings.transfer_workers, **opts)
    return Store(url, **opts)


def split_bucket_url(url: str) -> tuple[str, str, str]:
    """`s3://bucket/a/b` -> ('s3', 'bucket', 'a/b'); the path is cleaned, may be ''."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in BUCKET_SCHEMES:
        raise BadKey(
            f"{url!r} is not a bucket URL ({', '.join(s + '://' for s in BUCKET_SCHEMES)})"
        )
    bucket, _, path = rest.partition("/")
    if not bucket or bucket in (".", "..") or "\\" in bucket or "\x00" in bucket:
        raise BadKey(f"{url!r} has no bucket name")
    path = path.rstrip("/")
    return scheme, bucket, clean_key(path) if path else ""


# A mount source is first listed with one attempt and short timeouts, so an unreachable
# endpoint or unknown bucket is reported in seconds (botocore's and s3fs's own retries
# take a quarter of a minute); the store the run reads from keeps the usual retries.
_PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "connect_timeout": 5,
            "read_timeout": 20,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
    },
}


def open_source(
    source: str, store: Store, settings: Settings | None
) -> tuple[Store, str, list[Entry]]:
    """A mount source (runs/…, uploads/…, public/… or a bucket URL) as (store, key, files).

    A bucket is read with the configured credentials; when those are missing or
    refused, anonymously (public buckets). When both fail, the anonymous attempt's
    error is the one shown (a public bucket is what was left to try: the endpoint is
    unreachable, or the bucket unknown or private). No files: an empty list.
    """
    if "://" not in source:
        try:
            return store, source, list(store.walk(source))
        except (StoreError, FileNotFoundError):
            return store, source, []
    scheme, bucket, key = split_bucket_url(source)

    def options(anon: bool) -> dict[str, Any]:
        opts = storage_options(scheme, settings, anon=anon)
        if settings is not None and settings.store_url.startswith(f"{scheme}://") and not anon:
            opts = {**opts, **settings.store_options}
        return opts

    workers = settings.transfer_workers if settings else 16

    def probe(anon: bool) -> list[Entry] | None:
        """The listing (None: nothing there), or the exception that prevented it."""
        fast = {**options(anon), **_PROBE_OPTIONS.get(scheme, {})}
        try:
            st = Store(f"{scheme}://{bucket}", workers=1, **fast)
            if scheme == "s3":
                st.fs.retries = 1  # s3fs's own retries, on top of botocore's
            return list(st.walk(key))
        except (FileNotFoundError, BadKey):
            return None

    errors: dict[bool, BaseException] = {}
    for anon in (False, True):
        try:
            found = probe(anon)
        except StoreError:
            raise  # a missing extra: the same either way
        except Exception as e:  # credentials missing or refused: try anonymously
            errors[anon] = e
            continue
        if found is None:
            return store, key, []
        return Store(f"{scheme}://{bucket}", workers=workers, **options(anon)), key, found
    anon_error = errors[True]
    raise StoreError(
        f"cannot read {source}: {_one_line(anon_error)} "
        f"(anonymously; with the configured credentials: {_one_line(errors[False])})"
    )


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__
