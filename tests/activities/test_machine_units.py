"""Pure pieces of the machine activities."""

from __future__ import annotations

from conjure.activities.machine import parse_docker_ts


def test_docker_timestamps() -> None:
    a = parse_docker_ts("2026-11-21T06:59:01.1234Z")
    b = parse_docker_ts("2026-11-21T06:59:01.123456789Z")
    assert b - a == 56789
    assert parse_docker_ts("2026-11-21T06:59:01Z") % 1_000_000_000 == 0
