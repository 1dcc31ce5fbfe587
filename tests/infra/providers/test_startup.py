"""The cloud startup script."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from conjure.infra.catalog import load_catalog
from conjure.infra.config import Settings
from conjure.infra.providers.base import ProviderError, startup_script


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
