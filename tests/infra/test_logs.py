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
