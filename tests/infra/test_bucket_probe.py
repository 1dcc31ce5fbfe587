"""A bucket mount source that cannot be read is reported with the anonymous attempt's
error (the real s3fs/botocore against a closed local port: an unreachable endpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.store import StoreError, open_source, open_store
from tests.conftest import free_port


def test_unreachable_bucket_shows_the_anonymous_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    port = free_port()  # nothing listens there
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError) as e:
        open_source("s3://public-data/annual", open_store(f"file://{tmp_path}/s"), settings)
    msg = str(e.value)
    assert msg.startswith("cannot read s3://public-data/annual: Could not connect to the endpoint")
    assert f"127.0.0.1:{port}" in msg and "(anonymously; with the configured credentials:" in msg
    assert "\n" not in msg
