"""`--mount SRC[:DEST]` parsing, as the spec's examples write it."""

from __future__ import annotations

import pytest

from conjure.cli.mounts import parse_mount
from conjure.infra.errors import UsageError

WD = "/conjure/repo"


@pytest.mark.parametrize(
    "text,source,dest",
    [
        ("public/audio/css10:/mnt/audio-data", "public/audio/css10", "/mnt/audio-data"),
        ("public/audio/css10:audio-data", "public/audio/css10", f"{WD}/audio-data"),
        ("public/audio/css10", "public/audio/css10", f"{WD}/css10"),
        ("runs/435/foo.txt:foo.txt", "runs/435/foo.txt", f"{WD}/foo.txt"),
        ("uploads/mnist/", "uploads/mnist", f"{WD}/mnist"),
        ("s3://data-bucket/dataset/:/mnt/train/", "s3://data-bucket/dataset", "/mnt/train"),
        (
            "s3://silo-open-data/annual/monthly_rain:data",
            "s3://silo-open-data/annual/monthly_rain",
            f"{WD}/data",
        ),
        ("gs://bucket/a/b", "gs://bucket/a/b", f"{WD}/b"),
        ("az://container/x:/mnt/x", "az://container/x", "/mnt/x"),
        ("s3://whole-bucket", "s3://whole-bucket", f"{WD}/whole-bucket"),
        ("runs/12/out:/mnt/data", "runs/12/out", "/mnt/data"),
        ("runs/12/out", "runs/12/out", f"{WD}/out"),
        ("runs/7/", "runs/7", f"{WD}/7"),
    ],
)
def test_parse_mount(text: str, source: str, dest: str) -> None:
    m = parse_mount(text, WD)
    assert (m.source, m.dest) == (source, dest)


@pytest.mark.parametrize(
    "text,message",
    [
        ("s3://bucket/../other", "'..'"),
        ("s3:///path", "no bucket"),
        ("http://example.com/x", "unknown scheme"),
        ("uploads/x:../../etc", "'..'"),
        ("uploads/x:/", "cannot mount onto /"),
        ("uploads//x", "empty"),
        ("/etc/passwd", "absolute"),
        ("runs/abc/x", "runs/<run id>"),
        # refused whatever the wording
        *[
            (t, None)
            for t in (
                "",
                "runs/1/x:",
                "runs/1/x:a:b",
                "runs/../x",
                "runs/x/y",
                "other/x",
                "runs/1/x:/",
                "runs/1/x:/conjure",
            )
        ],
    ],
)
def test_parse_mount_refuses(text: str, message: str | None) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mount(text, WD)
