"""Run logs in the object store, written in chunks and read back in order.

A run's log is the set of objects `logs/<N>/<time_ns>-<phase>.jsonl`, one JSON
object a line: `{"t": <ns since epoch>, "s": "o"|"e"|"c", "l": "<text>"}` where
`s` is the stream: the command's stdout, its stderr, or a line of Conjure's own.
Chunk names sort in write order, so a follower reads new chunks by name.

A writer flushes every FLUSH_SECONDS while the run is young or someone follows
it (a follower keeps the object `logs/<N>/following` fresh), and less often
otherwise, so a long run nobody watches makes thousands of chunks, not millions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from conjure.infra.chunks import chunk_keys, chunk_lines
from conjure.infra.secrets import redact as redact_values
from conjure.infra.store import Store


@dataclass
class LogLine:
    t: int
    stream: str  # "o" stdout, "e" stderr, "c" conjure
    text: str
    phase: str = ""  # "build", "run" (the program's own lines), "push"; "" if unknown


def chunk_phase(key: str) -> str:
    """The phase of a log chunk `logs/N/<time>-<phase>.jsonl`."""
    name = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    return name.split("-", 1)[1] if "-" in name else ""


class RateLimiter:
    """At most `lines` lines in any rolling `window` seconds; the rest are counted."""

    def __init__(self, lines: int, window: float) -> None:
        self.lines = lines
        self.window = window
        self.times: deque[float] = deque()
        self.dropped = 0
        self.dropped_total = 0

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if self.lines > 0 and len(self.times) >= self.lines:
            self.dropped += 1
            self.dropped_total += 1
            return False
        self.times.append(now)
        return True

    def take_dropped(self) -> int:
        n, self.dropped = self.dropped, 0
        return n


FOLLOWING = "following"  # logs/<N>/following: the time a follower last said it was there
FOLLOW_FRESH = 10.0  # seconds a follower's mark counts
FOLLOW_EVERY = 3.0  # how often a follower renews it


def follow_key(run_id: int) -> str:
    return f"logs/{run_id}/{FOLLOWING}"


class LogWriter:
    """Buffers lines and flushes them as chunks; thread-safe."""

    FLUSH_SECONDS = 0.1
    FLUSH_LINES = 2000
    CHECK_FOLLOWED = 2.0  # how often an older run's writer looks for a follower

    def __init__(
        self,
        store: Store,
        run_id: int,
        phase: str,
        limiter: RateLimiter | None = None,
        redact: list[str] | None = None,
    ) -> None:
        self.store = store
        # Secret values, longest first, replaced by <REDACTED> before a line is stored.
        self.redact = sorted({v for v in redact or [] if v}, key=len, reverse=True)
        self.prefix = f"logs/{run_id}"
        self.phase = phase
        self.limiter = limiter
        self.buf: list[LogLine] = []
        self.lock = threading.Lock()
        self.lines = 0
        self.last_flushed: dict[str, int] = {}  # stream -> time of the last line stored
        self._last_chunk = 0
        self._closed = threading.Event()
        self._started = time.monotonic()
        self._followed_checked = 0.0
        self._followed = False
        self.run_id = run_id
        self._last_note = float("-inf")  # when the last "lines dropped" note was written
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, stream: str, text: str, t: int | None = None) -> None:
        t = t if t is not None else time.time_ns()
        if self.redact:
            text = redact_values(text, self.redact)
        with self.lock:
            if self.limiter is not None and stream != "c":
                now = time.monotonic()
                if not self.limiter.allow(now):
                    return
                # At most one note per rate window: a flood is one note a window, not one
                # per line let through; the notes add up to exactly the lines dropped.
                if self.limiter.dropped and now - self._last_note >= self.limiter.window:
                    self._last_note = now
                    note = self._dropped_note(self.limiter.take_dropped())
                    self.buf.append(LogLine(t, "c", note))
            self.buf.append(LogLine(t, stream, text))
            self.lines += 1
            if len(self.buf) >= self.FLUSH_LINES:
                self._flush_locked()

    def note(self, text: str) -> None:
        self.add("c", text)

    def _dropped_note(self, n: int) -> str:
        assert self.limiter is not None
        return (
            f"[conjure] {n} log line(s) dropped: the limit is {self.limiter.lines} lines "
            f"in any {self.limiter.window:g} seconds"
        )

    def _flush_locked(self) -> None:
        if not self.buf:
            return
        lines, self.buf = self.buf, []
        data = "".join(
            json.dumps({"t": ln.t, "s": ln.stream, "l": ln.text}, ensure_ascii=False) + "\n"
            for ln in lines
        ).encode()
        chunk = max(time.time_ns(), self._last_chunk + 1)
        self._last_chunk = chunk
        try:
            self.store.put_bytes(f"{self.prefix}/{chunk:020d}-{self.phase}.jsonl", data)
        except BaseException:
            self.buf = lines + self.buf  # kept for the next flush, never lost unseen
            raise
        for ln in lines:
            self.last_flushed[ln.stream] = max(self.last_flushed.get(ln.stream, 0), ln.t)

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _interval(self) -> float:
        """Flush often while someone is likely watching (the start, or a follower's
        mark is fresh), then less often, so a long run makes thousands of chunks,
        not millions."""
        now = time.monotonic()
        age = now - self._started
        if age < 30:
            return self.FLUSH_SECONDS
        if now - self._followed_checked >= self.CHECK_FOLLOWED:
            self._followed_checked = now
            self._followed = followed(self.store, self.run_id)
        if self._followed:
            return self.FLUSH_SECONDS
        return 1.0 if age < 600 else 5.0

    def _loop(self) -> None:
        while not self._closed.wait(self._interval()):
            try:
                self.flush()
            except Exception:  # the store is briefly unreachable: keep buffering
                pass

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        with self.lock:
            if self.limiter is not None:
                dropped = self.limiter.take_dropped()
                if dropped:
                    self.buf.append(LogLine(time.time_ns(), "c", self._dropped_note(dropped)))
            self._flush_locked()


def followed(store: Store, run_id: int) -> bool:
    try:
        mark = float(store.read_bytes(follow_key(run_id)))
    except Exception:  # no follower yet, or a half-written mark
        return False
    return time.time() - mark < FOLLOW_FRESH


class LogReader:
    """Reads a run's log chunks in order; `poll()` returns only what is new.

    `follow()` says a follower is there (call it on every poll: it writes at most
    every FOLLOW_EVERY seconds), so the run's writer flushes at its fastest."""

    def __init__(self, store: Store, run_id: int, after: str = "") -> None:
        """after: a chunk name (`cursor` of an earlier reader): start after it."""
        self.store = store
        self.run_id = run_id
        self.prefix = f"logs/{run_id}"
        self.seen: set[str] = set()
        self.last = ""
        self.after = after
        self.left = 0  # chunks a poll with max_chunks left for the next one
        self._marked = 0.0

    def follow(self) -> None:
        now = time.monotonic()
        if now - self._marked < FOLLOW_EVERY:
            return
        self._marked = now
        try:
            self.store.put_bytes(follow_key(self.run_id), str(time.time()).encode())
        except Exception:  # a read-only store: the run flushes at its own pace
            pass

    @property
    def cursor(self) -> str:
        """The name of the last chunk read: a later reader continues from it."""
        return self.last.rsplit("/", 1)[-1] if self.last else self.after

    def poll(self, max_chunks: int = 0, phases: Collection[str] | None = None) -> Iterator[LogLine]:
        """The lines of chunks not read yet (at most max_chunks of them when > 0); with
        `phases`, only chunks of those phases (the others are left for a later poll,
        so do not take `cursor` from a reader polled by phase)."""
        try:
            entries = self.store.ls(self.prefix)
        except Exception:
            return
        after = f"{self.prefix}/{self.after}" if self.after else ""
        names = sorted(
            e.key
            for e in entries
            if e.key.endswith(".jsonl")
            and e.key not in self.seen
            and e.key > after
            and (phases is None or chunk_phase(e.key) in phases)
        )
        self.left = max(0, len(names) - max_chunks) if max_chunks > 0 else 0
        for key in names[:max_chunks] if max_chunks > 0 else names:
            if key <= self.last and key in self.seen:
                continue
            try:
                data = self.store.read_bytes(key)
            except Exception:
                return
            self.seen.add(key)
            self.last = max(self.last, key)
            phase = chunk_phase(key)
            for raw in data.decode(errors="replace").splitlines():
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                yield LogLine(int(obj.get("t", 0)), obj.get("s", "o"), obj.get("l", ""), phase)


def stored_until(store: Store, run_id: int, phase: str, max_chunks: int = 200) -> dict[str, int]:
    """stream -> time of the last line of `phase` the store holds (newest chunks first,
    at most max_chunks read). A resumed follower starts after these, so an agent that
    died between storing lines and heartbeating does not store them twice."""
    keys = chunk_keys(store, f"logs/{run_id}", f"-{phase}.jsonl")
    found: dict[str, int] = {}
    for key in keys[::-1][:max_chunks]:
        for raw in chunk_lines(store, key) or []:
            try:
                obj = json.loads(raw)
                s, t = obj.get("s", "o"), int(obj.get("t", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            if s in ("o", "e"):
                found[s] = max(found.get(s, 0), t)
        if "o" in found and "e" in found:
            break
    return found
