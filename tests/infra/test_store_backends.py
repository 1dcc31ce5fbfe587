"""The same store suite against every backend: the local directory, S3 (moto_server),
GCS (gcp-storage-emulator) and Azure Blob (Azurite), each started here on 127.0.0.1."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from conjure.activities.resources import MountError, mount_all, mount_writes
from conjure.cli import resources
from conjure.infra import store as store_mod
from conjure.infra.config import Settings
from conjure.infra.errors import ConjureError, UsageError
from conjure.infra.store import BadKey, Store, open_source, open_store
from conjure.workflows.models import MountInput, MountSpec
from tests import emulators

BACKENDS = ["local", "s3", "gcs", "azure"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    kind = request.param
    work = tmp_path_factory.mktemp(f"store-{kind}")
    with ExitStack() as stack:
        if kind == "local":
            s = Settings(home=work, store_url=f"file://{work}/store", transfer_workers=8)
        elif kind == "s3":
            url = stack.enter_context(emulators.moto(work))
            s = Settings(
                home=work,
                store_url="s3://conjure-test/prefix",
                s3_endpoint_url=url,
                store_options={"key": "testing", "secret": "testing"},
                transfer_workers=8,
            )
        elif kind == "gcs":
            url = stack.enter_context(emulators.gcs(work))
            s = Settings(
                home=work,
                store_url="gs://conjure-test/prefix",
                gcs_endpoint_url=url,
                transfer_workers=8,
            )
        else:
            conn = stack.enter_context(emulators.azurite(work))
            s = Settings(
                home=work,
                store_url="az://conjure-test/prefix",
                azure_connection_string=conn,
                transfer_workers=8,
            )
        if kind != "local":
            st = open_store(s.store, s)
            st.fs.mkdir("conjure-test")
        yield s


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise the ranged parallel download of large objects on small files."""
    monkeypatch.setattr(store_mod, "LARGE_FILE", 1 << 20)
    monkeypatch.setattr(store_mod, "RANGE_SIZE", 256 << 10)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(1000),
        "sub/deeper/c.txt": b"",
        "big.bin": os.urandom(3 * (1 << 20) + 12345),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_tree_round_trip(backend: Settings, tmp_path: Path, small_ranges: None) -> None:
    st = open_store(backend.store, backend)
    src = tmp_path / "src"
    files = make_tree(src)
    stats = st.put_tree(src, "uploads/rt")
    assert (stats.files, stats.bytes) == (len(files), sum(map(len, files.values())))
    walked = {e.key: e.size for e in st.walk("uploads/rt")}
    assert walked == {f"uploads/rt/{k}": len(v) for k, v in files.items()}
    assert all(e.tag for e in st.walk("uploads/rt"))
    names = {(e.key, e.is_dir) for e in st.ls("uploads/rt")}
    assert ("uploads/rt/a.txt", False) in names and ("uploads/rt/sub", True) in names
    moved: list[int] = []
    back = st.get_tree("uploads/rt", tmp_path / "back", progress=moved.append)
    assert read_tree(tmp_path / "back") == files
    assert back.files == len(files) and sum(moved) == back.bytes
    # a single file downloads as itself
    st.get_tree("uploads/rt/sub/b.bin", tmp_path / "one.bin")
    assert (tmp_path / "one.bin").read_bytes() == files["sub/b.bin"]
    st.rm("uploads/rt")
    assert list(st.walk("uploads/rt")) == []


def test_content_tag_follows_content(backend: Settings) -> None:
    st = open_store(backend.store, backend)
    st.put_bytes("uploads/tag/x", b"aaaa")
    first = next(st.walk("uploads/tag/x")).tag
    st.put_bytes("uploads/tag/x", b"bbbb")
    assert next(st.walk("uploads/tag/x")).tag != first


@pytest.mark.parametrize(
    "key", ["../x", "/etc/passwd", "uploads/../../x", "uploads//x", "", "a/./b"]
)
def test_unsafe_keys_refused(backend: Settings, tmp_path: Path, key: str) -> None:
    st = open_store(backend.store, backend)
    with pytest.raises(BadKey):
        st.put_bytes(key, b"x")
    with pytest.raises(BadKey):
        st.get_tree(key, tmp_path / "d") if key else st.put_tree(tmp_path, key)


def _plant(st: Store, settings: Settings, name: str) -> None:
    """Write an object under a name the store would never write. GCS by one plain upload
    request: gcsfs retries a refusal six times with backoff (half a minute)."""
    if settings.gcs_endpoint_url:
        bucket, _, prefix = st.root.partition("/")
        r = requests.post(
            f"{settings.gcs_endpoint_url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": f"{prefix}/{name}".lstrip("/")},
            data=b"evil",
            timeout=10,
        )
        r.raise_for_status()
        return
    st.fs.pipe_file(f"{st.root}/{name}", b"evil")


def test_planted_names_never_leave_the_prefix(backend: Settings, tmp_path: Path) -> None:
    """An object named with '..' (a bucket can hold one), or a link planted in a local
    store, is skipped by listings and never written outside the destination."""
    st = open_store(backend.store, backend)
    st.put_bytes("uploads/plant/ok.txt", b"ok")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    if st.local:
        os.symlink(outside / "secret", Path(st.root) / "uploads/plant/link")
        os.symlink(outside, Path(st.root) / "uploads/linkdir")
        with pytest.raises(BadKey):
            st.read_bytes("uploads/linkdir/secret")
    else:
        try:
            _plant(st, backend, "uploads/plant/../../../escaped")
        except Exception:
            pass  # the backend refused the name itself: fine too
    keys = [e.key for e in st.walk("uploads/plant")]
    assert keys == ["uploads/plant/ok.txt"]
    dest = tmp_path / "dest"
    st.get_tree("uploads/plant", dest)
    assert read_tree(dest) == {"ok.txt": b"ok"}
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_upload_cp_rm(backend: Settings, tmp_path: Path) -> None:
    st = open_store(backend.store, backend)
    src = tmp_path / "dataset"
    files = make_tree(src)
    os.symlink("/etc/hostname", src / "leak")  # a link out of the folder is left out
    os.symlink(src / "a.txt", src / "inner")  # a link inside is resolved
    t = resources.upload(st, src)
    assert t.resource == "uploads/dataset" and t.files == len(files) + 1
    assert t.skipped == [str(src.resolve() / "leak")]
    with pytest.raises(ConjureError, match="already exists"):
        resources.upload(st, src)
    root = {e.key for e in resources.listing(st, "/")}
    assert "uploads" in root and root <= {"runs", "uploads", "public"}
    got = resources.download(st, "uploads/dataset", tmp_path / "got")
    assert got.files == len(files) + 1
    assert read_tree(tmp_path / "got") == {**files, "inner": files["a.txt"]}
    (tmp_path / "dir").mkdir()
    resources.download(st, "uploads/dataset/a.txt", tmp_path / "dir")
    assert (tmp_path / "dir" / "a.txt").read_bytes() == files["a.txt"]
    st.put_bytes("runs/7/out.txt", b"output")
    for bad in ("runs/7/out.txt", "runs/7", "uploads", "public/x", "../uploads/dataset"):
        with pytest.raises(UsageError):
            resources.remove(st, bad)
    with pytest.raises(ConjureError, match="does not exist"):
        resources.remove(st, "uploads/nope")
    assert resources.remove(st, "uploads/dataset").files == len(files) + 1
    assert list(st.walk("uploads/dataset")) == []
    assert st.read_bytes("runs/7/out.txt") == b"output"


def test_mount_cache_and_writes(backend: Settings, tmp_path: Path) -> None:
    st = open_store(backend.store, backend)
    st.put_bytes("uploads/m/x.txt", b"x")
    st.put_bytes("uploads/m/d/y.txt", b"yy")
    st.put_bytes("uploads/copy/x.txt", b"x")  # the same content under another name
    st.put_bytes("uploads/copy/d/y.txt", b"yy")
    machine = tmp_path / "machine"
    logs: list[object] = []

    def mount(run: int, src: str, dest: str = "/mnt/m"):  # type: ignore[no-untyped-def]
        rd = machine / "runs" / str(run)
        rd.mkdir(parents=True, exist_ok=True)
        return mount_all(
            backend,
            st,
            machine,
            rd,
            MountInput(run_id=run, mounts=[MountSpec(source=src, dest=dest)]),
            logs.append,
        ), rd

    first, rd = mount(1, "uploads/m")
    assert first.cached == [False] and first.sizes == [3]
    lower = Path(first.binds[0].host)
    assert sorted(p.relative_to(lower).as_posix() for p in lower.rglob("*.txt")) == [
        "d/y.txt",
        "x.txt",
    ]
    assert first.binds[0].overlay_upper and not first.binds[0].read_only
    again, _ = mount(2, "uploads/m")
    assert again.cached == [True] and again.binds[0].host == first.binds[0].host
    if not st.local:  # remote stores tag by content (ETag/MD5): a copy shares the entry
        other, _ = mount(3, "uploads/copy")
        assert other.cached == [True]
    # a file mount is bound read-only; a missing source is a clear error
    single, _ = mount(4, "uploads/m/x.txt", "/conjure/x.txt")
    assert single.binds[0].read_only and Path(single.binds[0].host).read_bytes() == b"x"
    with pytest.raises(MountError, match="does not exist"):
        mount(5, "uploads/nothing")
    # files written in the overlay's upper layer are the run's outputs under runs/N/<dest>
    upper = Path(first.binds[0].overlay_upper)
    (upper / "new.txt").write_text("new")
    os.symlink("/etc/hostname", upper / "link")
    os.mknod(upper / "x.txt", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout (deletion)
    written = mount_writes(rd, 1, "/conjure/repo")
    assert [k for _, k in written] == ["runs/1/mnt/m/new.txt"]
    (rd / "mounts.json").write_text(
        json.dumps([{"dest": "/conjure/repo/data", "upper": str(upper)}])
    )
    assert [k for _, k in mount_writes(rd, 1, "/conjure/repo")] == ["runs/1/data/new.txt"]


def test_bucket_source_read_anonymously(
    backend: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket URL mount source; S3 without any credentials (a public bucket)."""
    st = open_store(backend.store, backend)
    if st.local:
        with pytest.raises(BadKey):
            open_source("s3://", st, backend)
        return
    scheme = backend.store_url.split("://")[0]
    st.put_bytes("public-data/ds/one.csv", b"1,2\n")
    src = f"{scheme}://conjure-test/prefix/public-data/ds"
    if scheme == "s3":
        for k in emulators.S3_CREDENTIALS:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        anon = backend.model_copy(update={"store_url": "", "store_options": {}})
        s, key, entries = open_source(src, Store("file://" + str(tmp_path / "x")), anon)
    else:
        s, key, entries = open_source(src, st, backend)
    assert key == "prefix/public-data/ds"
    assert [e.key for e in entries] == ["prefix/public-data/ds/one.csv"]
    _, _, none = open_source(f"{scheme}://conjure-test/prefix/nothing-here", st, backend)
    assert none == []
