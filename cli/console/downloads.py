"""Downloads from the store, streamed: a file as it is, a folder as a .tar.gz made on
the fly (never whole in memory or on disk). Keys come through resources.resource_key
(runs/, uploads/, public/ only; no '..', no secrets/), and the store refuses links."""

from __future__ import annotations

import queue
import tarfile
import threading
from collections.abc import Iterator
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse

from conjure.infra.errors import ConjureError
from conjure.infra.store import Entry, Store, StoreError

BLOCK = 256 << 10


def _disposition(name: str) -> str:
    ascii_name = "".join(ch if 32 < ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def download(store: Store, key: str) -> Response:
    entries = list(store.walk(key))
    if not entries:
        raise ConjureError(f"{key} does not exist")
    name = key.rsplit("/", 1)[-1]
    if len(entries) == 1 and entries[0].key == key:
        return StreamingResponse(
            _file_blocks(store, key),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": _disposition(name),
                "Content-Length": str(entries[0].size),
            },
        )
    return StreamingResponse(
        _tar_gz(store, key, entries),
        media_type="application/gzip",
        headers={"Content-Disposition": _disposition(f"{name}.tar.gz")},
    )


def _file_blocks(store: Store, key: str) -> Iterator[bytes]:
    try:
        f = store.open(key)
    except StoreError:
        return
    with f:
        while block := f.read(BLOCK):
            yield block


class _Pipe:
    """A write-only file whose blocks go to a bounded queue: tarfile writes into it on
    one thread while the response reads from the other, so memory stays bounded."""

    def __init__(self) -> None:
        self.q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self.closed_by_reader = threading.Event()

    def send(self, item: bytes | BaseException | None) -> None:
        while not self.closed_by_reader.is_set():
            try:
                self.q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("the client went away")

    def write(self, data: bytes) -> int:
        if data:
            self.send(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def _tar_gz(store: Store, key: str, entries: list[Entry]) -> Iterator[bytes]:
    pipe = _Pipe()
    top = key.rsplit("/", 1)[-1]

    def produce() -> None:
        try:
            with tarfile.open(fileobj=pipe, mode="w|gz", bufsize=BLOCK) as tar:  # type: ignore[call-overload]
                for e in entries:
                    info = tarfile.TarInfo(f"{top}/{e.key[len(key) + 1 :]}")
                    info.size = e.size
                    info.mode = 0o644
                    with store.open(e.key) as f:
                        tar.addfile(info, f)
            pipe.send(None)
        except BrokenPipeError:
            pass  # the reader is gone: nothing to tell
        except Exception as e:  # handed to the reading side, which raises it
            try:
                pipe.send(e)
            except BrokenPipeError:
                pass

    worker = threading.Thread(target=produce, daemon=True, name=f"tar {key}")
    worker.start()
    try:
        while True:
            item = pipe.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pipe.closed_by_reader.set()
