"""Run and machine cost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conjure.workflows import cost


def test_cost() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert cost.cost(3.6, t0, t0 + timedelta(seconds=10)) == pytest.approx(0.01)
    assert cost.cost(3.6, None, t0) == 0.0
    m = cost.memo(3.6, t0, None)
    assert cost.from_memo(m, t0 + timedelta(seconds=20)) == pytest.approx(0.02)  # still running
    assert cost.from_memo({}, t0) is None
