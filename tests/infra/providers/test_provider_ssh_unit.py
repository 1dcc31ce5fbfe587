"""The ssh provider's pure parts: nvidia-smi and host probes -> machine types (no GPU
here: parsing is tested on nvidia-smi's documented CSV output), the run container's
GPU device requests, the agent's settings through the tunnel, and the pool caps a
fleet of hosts implies."""

from __future__ import annotations

from pathlib import Path

import pytest

from conjure.activities.machine import gpu_device_requests
from conjure.infra.catalog import load_catalog
from conjure.infra.config import Settings, SSHHost
from conjure.infra.pool_config import pool_config
from conjure.infra.providers import ssh
from conjure.infra.providers.base import ProviderError

CATALOG = load_catalog()

# `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` on real machines.
T4_X1 = "Tesla T4, 15360\n"
A100_X4 = "\n".join(["NVIDIA A100-SXM4-40GB, 40960"] * 4) + "\n"
H100 = "NVIDIA H100 80GB HBM3, 81559\n"
V100 = "Tesla V100-SXM2-16GB, 16160\n"


def test_gpu_inventory_parsing() -> None:
    assert ssh.parse_gpu_inventory(T4_X1) == [("Tesla T4", 15360)]
    assert ssh.parse_gpu_inventory(A100_X4) == [("NVIDIA A100-SXM4-40GB", 40960)] * 4
    assert ssh.parse_gpu_inventory("") == []
    # Driver trouble prints a sentence, not CSV: no GPUs, not a crash.
    assert (
        ssh.parse_gpu_inventory(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
        )
        == []
    )
    assert ssh.parse_gpu_inventory("No devices were found\n") == []


@pytest.mark.parametrize(
    ("smi", "expected"),
    [(T4_X1, "T4"), (A100_X4, "A100"), (H100, "H100"), (V100, "V100")],
)
def test_gpu_hosts_get_the_type_of_their_gpu(smi: str, expected: str) -> None:
    vcpus, mem, gpus = ssh.parse_probe(f"8\n{64 * 1024 * 1024}\n{smi}")
    assert (vcpus, round(mem), len(gpus)) == (8, 64, len(smi.strip().splitlines()))
    assert ssh.match_machine_type(vcpus, mem, gpus, CATALOG) == expected


def test_cpu_hosts_get_the_biggest_type_they_hold() -> None:
    assert ssh.match_machine_type(2, 3.8, [], CATALOG) == "cpu"  # MemTotal is under 4 GiB
    assert ssh.match_machine_type(16, 62.8, [], CATALOG) == "cpu-big"
    assert ssh.match_machine_type(16, 128, [], CATALOG) == "ram-big"
    with pytest.raises(ValueError, match="no GPU-less machine type fits"):
        ssh.match_machine_type(1, 1, [], CATALOG)
    with pytest.raises(ValueError, match="no machine type in the catalog has a Quadro"):
        ssh.match_machine_type(8, 32, [("Quadro RTX 6000", 24576)], CATALOG)


def test_gpu_device_requests() -> None:
    (req,) = gpu_device_requests(4, has_nvidia_smi=True)
    assert req["Count"] == 4 and req["Capabilities"] == [["gpu"]]
    assert gpu_device_requests(0, has_nvidia_smi=True) == []
    assert gpu_device_requests(1, has_nvidia_smi=False) == []  # no driver: no --gpus


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, embedded_port=7999, **kw)  # type: ignore[arg-type]


def test_agent_reaches_loopback_services_through_the_tunnel(tmp_path: Path) -> None:
    s = _settings(tmp_path, store_url="s3://b/p", s3_endpoint_url="http://127.0.0.1:9000")
    assert ssh.forwards(s) == [(17233, "127.0.0.1", 7999), (17234, "127.0.0.1", 9000)]
    env = ssh.agent_env(s, "/home/u/.conjure")
    assert env["CONJURE_TEMPORAL_ADDRESS"] == "127.0.0.1:17233"
    assert env["CONJURE_S3_ENDPOINT_URL"] == "http://127.0.0.1:17234"
    assert env["CONJURE_HOME"] == "/home/u/.conjure"
    # A production cluster and a cloud store are reached directly: nothing forwarded.
    prod = _settings(tmp_path, temporal_address="temporal.example:7233", store_url="s3://b")
    assert ssh.forwards(prod) == []
    assert ssh.agent_env(prod, "/x")["CONJURE_TEMPORAL_ADDRESS"] == "temporal.example:7233"


def test_a_file_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="needs an object store its hosts can reach"):
        ssh.check_store(_settings(tmp_path))


def test_start_script_quotes_what_it_is_given() -> None:
    h = SSHHost(host="h", conjure_dir="odd dir")
    script = ssh.start_agent_script(h, "ssh-1", {"CONJURE_X": "a'b $HOME"})
    assert "export CONJURE_X='a'\"'\"'b $HOME'" in script
    assert "\"$HOME\"/'odd dir'" in script
    assert SSHHost(host="10.0.0.5", user="root").key == "root@10.0.0.5_22"


def test_fleet_caps_and_providers(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[machine_types.T4]\nprovider = "ssh"\n[machine_types.A100]\nprovider = "aws"\n'
    )
    hosts = [SSHHost(host=f"10.0.0.{i}", machine_type="T4") for i in range(3)]
    cfg = pool_config(_settings(tmp_path, ssh_hosts=hosts))
    assert cfg.provider == "local"
    assert cfg.other_providers == ["aws", "ssh"]
    assert cfg.max_machines == {"T4": 3, "ssh": 3}
    mine = pool_config(_settings(tmp_path, ssh_hosts=hosts, max_machines={"T4": 1}))
    assert mine.max_machines["T4"] == 1  # the user's cap wins
