"""Cost: a machine's price per hour times the time it was held. Pure functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

MEMO_KEY = "conjure_cost"


def cost(price_per_hour: float, start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None or end <= start:
        return 0.0
    return price_per_hour * (end - start).total_seconds() / 3600.0


def memo(
    price_per_hour: float,
    leased_at: datetime | None,
    released_at: datetime | None,
    earlier: float = 0.0,
) -> dict[str, Any]:
    """What a run keeps in its memo, so `conjure ls` shows cost without querying each run.
    earlier: the cost of the machines of a resumed run's earlier attempts."""
    entry: dict[str, Any] = {
        "price_per_hour": price_per_hour,
        "leased_at": leased_at.isoformat() if leased_at else None,
        "released_at": released_at.isoformat() if released_at else None,
        "cost": earlier + cost(price_per_hour, leased_at, released_at),
    }
    if earlier:
        entry["earlier"] = earlier
    return {MEMO_KEY: entry}


def from_memo(data: dict[str, Any] | None, now: datetime) -> float | None:
    """The cost so far of a run from its memo; None when it never had a machine."""
    entry = (data or {}).get(MEMO_KEY)
    if not entry or not entry.get("leased_at"):
        return None
    start = datetime.fromisoformat(entry["leased_at"])
    end = datetime.fromisoformat(entry["released_at"]) if entry.get("released_at") else now
    earlier = float(entry.get("earlier") or 0.0)
    return earlier + cost(float(entry.get("price_per_hour") or 0.0), start, end)
