"""Small pure pieces of the machines work: catalog data, pool settings, startup
script, cost."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conjure.infra.catalog import load_catalog
from conjure.infra.config import Settings
from conjure.infra.pool_config import explicit_fields, pool_config
from conjure.infra.providers.base import ProviderError, instance_type, startup_script
from conjure.workflows import cost


def test_catalog_has_every_type_on_every_cloud() -> None:
    cat = load_catalog(None)
    assert list(cat) == ["cpu", "cpu-big", "cpu-huge", "ram-big", "ram-huge", "K80", "T4", "P100",
                         "V100", "A100", "H100"]  # fmt: skip
    for m in cat.values():
        assert m.vcpus > 0 and m.memory_gb > 0 and m.price_per_hour >= 0
        assert m.instance_types.get("gcp") and m.instance_types.get("azure")
        assert (m.gpus > 0) == bool(m.gpu_model)
    assert cat["T4"].price_per_hour == 0.526 and cat["V100"].gpus == 1
    with pytest.raises(ProviderError, match="no aws instance type"):
        instance_type(cat["P100"], "aws")  # AWS never offered P100 on its own


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


def test_startup_script_carries_tls_files(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("CA\n")
    s = Settings(
        home=tmp_path, provider="aws", temporal_address="t.example:7233",
        temporal_tls_ca=tmp_path / "ca.pem", temporal_api_key="k3y",
    )  # fmt: skip
    script = startup_script(s, "aws-1", load_catalog(None)["cpu"])
    assert base64.b64encode(b"CA\n").decode() in script
    assert "CONJURE_TEMPORAL_TLS_CA=/etc/conjure/tls/ca.pem" in script
    assert "CONJURE_TEMPORAL_API_KEY=k3y" in script and "CONJURE_TEMPORAL_TLS=true" in script
    assert "$" not in script.replace("${", "")  # every template field was filled
    with pytest.raises(ProviderError, match="temporal_address"):
        startup_script(Settings(home=tmp_path), "aws-1", load_catalog(None)["cpu"])


def test_cost() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert cost.cost(3.6, t0, t0 + timedelta(seconds=10)) == pytest.approx(0.01)
    assert cost.cost(3.6, None, t0) == 0.0
    m = cost.memo(3.6, t0, None)
    assert cost.from_memo(m, t0 + timedelta(seconds=20)) == pytest.approx(0.02)  # still running
    assert cost.from_memo({}, t0) is None
