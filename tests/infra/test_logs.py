"""The log rate limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure.infra.logs import RateLimiter


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=400))
def test_rate_limiter_window(times: list[float]) -> None:
    times = sorted(times)
    lim = RateLimiter(lines=10, window=5.0)
    allowed = [t for t in times if lim.allow(t)]
    assert lim.dropped_total == len(times) - len(allowed)
    for i, t in enumerate(allowed):  # never more than 10 allowed in any 5 s window
        assert sum(1 for u in allowed[: i + 1] if t - u < 5.0) <= 10


def test_writer_flushes_fast_while_followed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conjure.infra.logs import LogReader, LogWriter
    from conjure.infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    w = LogWriter(store, 7, "run")
    try:
        assert w._interval() == LogWriter.FLUSH_SECONDS  # a young run: someone may watch
        w._started -= 120  # an older run nobody follows: fewer, bigger chunks
        assert w._interval() == 1.0
        reader = LogReader(store, 7)
        reader.follow()  # a follower says it is there
        w._followed_checked = 0.0
        assert w._interval() == LogWriter.FLUSH_SECONDS
        w.add("o", "hello")
    finally:
        w.close()
    # The mark is not a chunk: the reader still returns only the run's lines.
    assert [ln.text for ln in LogReader(store, 7).poll()] == ["hello"]


def test_flood_writes_one_drop_note_per_window_with_the_exact_count(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A flood through the real LogWriter into a real (local) store, on a clock the test
    moves: a trickle, then lines at twice the limit's rate (today: a "1 line dropped"
    note for every other line). The notes add up to exactly the lines dropped, there is
    at most one note per rate window, and the kept lines are in order."""
    import re

    from conjure.infra import logs
    from conjure.infra.logs import LogReader, LogWriter
    from conjure.infra.store import open_store

    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    store = open_store(f"file://{tmp_path}")
    writer = LogWriter(store, 7, "run", RateLimiter(lines=10, window=1.0))
    sent = 0
    for i in range(10):  # a trickle: one line every 0.1 s
        clock[0] = 1000.0 + i * 0.1
        writer.add("o", f"line {sent}")
        sent += 1
    for i in range(400):  # the flood: twice the limit's rate for 20 s
        clock[0] = 1001.0 + i * 0.05
        writer.add("o", f"line {sent}")
        sent += 1
    writer.close()
    lines = list(LogReader(store, 7).poll())
    kept = [ln for ln in lines if ln.stream == "o"]
    notes = [ln for ln in lines if ln.stream == "c"]
    counted = sum(int(re.match(r"\[conjure\] (\d+) log line", n.text).group(1)) for n in notes)  # type: ignore[union-attr]
    assert writer.limiter is not None
    assert counted == writer.limiter.dropped_total == sent - len(kept) > 0
    assert len(notes) <= 20 + 1, f"{len(notes)} notes for 20 windows"
    numbers = [int(ln.text.split()[1]) for ln in kept]
    assert numbers == sorted(numbers)


def test_a_failed_chunk_write_loses_no_line(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The store refuses one chunk (briefly unreachable): its lines go out with the next."""
    from conjure.infra.logs import LogReader, LogWriter
    from conjure.infra.store import open_store

    store = open_store(f"file://{tmp_path}")
    real = store.put_bytes
    failures = [1]

    def flaky(key: str, data: bytes) -> None:
        if failures:
            failures.pop()
            raise OSError("the store is briefly unreachable")
        real(key, data)

    monkeypatch.setattr(store, "put_bytes", flaky)
    writer = LogWriter(store, 9, "run")
    for i in range(5):
        writer.add("o", f"line {i}")
    try:
        writer.flush()
    except OSError:
        pass
    writer.add("o", "line 5")
    writer.close()
    assert [ln.text for ln in LogReader(store, 9).poll()] == [f"line {i}" for i in range(6)]
