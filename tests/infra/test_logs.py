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
