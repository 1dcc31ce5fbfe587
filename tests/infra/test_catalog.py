"""The machine-type catalog: shipped data and user types."""

from __future__ import annotations

import pytest

from conjure.infra.catalog import UnknownMachineType, load_catalog, lookup
from conjure.infra.providers.base import ProviderError, instance_type


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
