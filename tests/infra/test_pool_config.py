"""Pool settings from configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from conjure.infra.pool_config import explicit_fields, pool_config


def test_pool_config_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("CONJURE_")]:
        monkeypatch.delenv(k)  # a session stack's settings are not this test's
    monkeypatch.setenv("CONJURE_HOME", str(tmp_path))
    s = Settings(home=tmp_path, max_concurrent_runs=3, max_machines={"T4": 2})
    assert explicit_fields(s) == ["max_concurrent_runs", "max_machines"]
    cfg = pool_config(s)
    assert cfg.max_concurrent_runs == 3 and cfg.max_machines == {"T4": 2}
    assert cfg.machine_ready_timeout_seconds == 120
    assert pool_config(Settings(home=tmp_path, provider="aws")).machine_ready_timeout_seconds == 900
    assert explicit_fields(Settings(home=tmp_path)) == []
