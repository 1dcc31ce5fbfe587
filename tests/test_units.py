"""Unit tests of the pure pieces: mount parsing, store keys, the log rate limit,
the catalog, docker timestamps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure.activities.machine import parse_docker_ts
from conjure.cli.mounts import parse_mount
from conjure.infra.catalog import UnknownMachineType, load_catalog, lookup
from conjure.infra.errors import UsageError
from conjure.infra.logs import RateLimiter
from conjure.infra.store import BadKey, clean_key

WD = "/conjure/project/src"


@pytest.mark.parametrize(
    "text, source, dest",
    [
        ("runs/12/out:/mnt/data", "runs/12/out", "/mnt/data"),
        ("runs/435/foo.txt:foo.txt", "runs/435/foo.txt", f"{WD}/foo.txt"),
        ("runs/12/out", "runs/12/out", f"{WD}/out"),
        ("uploads/audio/css10:audio-data", "uploads/audio/css10", f"{WD}/audio-data"),
        ("public/audio/css10", "public/audio/css10", f"{WD}/css10"),
        ("runs/7/", "runs/7", f"{WD}/7"),
    ],
)
def test_parse_mount(text: str, source: str, dest: str) -> None:
    m = parse_mount(text, WD)
    assert (m.source, m.dest) == (source, dest)


@pytest.mark.parametrize(
    "text",
    ["", "runs/1/x:", "runs/1/x:a:b", "/etc/passwd", "runs/../x", "runs/x/y", "other/x",
     "runs/1/x:/", "runs/1/x:/conjure"],
)  # fmt: skip
def test_parse_mount_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_mount(text, WD)


@given(st.text())
def test_clean_key_never_escapes(key: str) -> None:
    try:
        k = clean_key(key)
    except BadKey:
        return
    parts = k.split("/")
    assert not k.startswith("/") and ".." not in parts and "" not in parts


@given(st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=400))
def test_rate_limiter_window(times: list[float]) -> None:
    times = sorted(times)
    lim = RateLimiter(lines=10, window=5.0)
    allowed = [t for t in times if lim.allow(t)]
    assert lim.dropped_total == len(times) - len(allowed)
    for i, t in enumerate(allowed):  # never more than 10 allowed in any 5 s window
        assert sum(1 for u in allowed[: i + 1] if t - u < 5.0) <= 10


def test_catalog_and_user_types(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[machine_types.mine]\nvcpus = 3\nmemory_gb = 5\n[machine_types.cpu]\nmemory_gb = 6\n"
    )
    cat = load_catalog(cfg)
    assert {"cpu", "cpu-big", "cpu-huge", "ram-big", "ram-huge", "K80", "T4", "P100", "V100",
            "A100", "H100", "mine"} <= set(cat)  # fmt: skip
    assert cat["cpu"].memory_gb == 6 and cat["cpu"].vcpus == 2
    assert lookup("mine", cat).vcpus == 3
    with pytest.raises(UnknownMachineType, match="known types: cpu"):
        lookup("nope", cat)


def test_docker_timestamps() -> None:
    a = parse_docker_ts("2026-11-21T06:59:01.1234Z")
    b = parse_docker_ts("2026-11-21T06:59:01.123456789Z")
    assert b - a == 56789
    assert parse_docker_ts("2026-11-21T06:59:01Z") % 1_000_000_000 == 0
