"""The `gcp` and `azure` providers at their SDK's HTTP transport.

No emulator exists for the Compute Engine or Azure Compute APIs, so these tests
use the real SDK clients (google-cloud-compute's REST transport, azure-mgmt-compute)
with a FAKE HTTP layer injected: a `requests` transport adapter mounted on the
client's session that records each request and answers with canned JSON shaped
like the cloud's documented responses. They check the requests the providers
build (machine type, labels/tags, startup script, spot, accelerators) and how
they handle the answers (records, 404 as already gone). Nothing here talks to a
cloud.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter

from conjure.infra.config import Settings
from conjure.infra.providers import azure, gcp
from conjure.workflows.models import MachineType

T4 = MachineType(
    name="T4", vcpus=4, memory_gb=16, gpus=1, price_per_hour=0.526, spot=True,
    instance_types={"gcp": "n1-standard-4+nvidia-tesla-t4", "azure": "Standard_NC4as_T4_v3"},
)  # fmt: skip
CPU = MachineType(
    name="cpu", vcpus=2, memory_gb=4, spot=True,
    instance_types={"gcp": "e2-medium", "azure": "Standard_B2s"},
)  # fmt: skip


class FakeHTTP(BaseAdapter):
    """A fake HTTP transport: records requests, answers from `handler`."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], tuple[int, Any]]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        status, body = self.handler(request)
        content = json.dumps(body).encode()
        resp = requests.Response()
        resp.status_code = status
        resp.raw = urllib3.HTTPResponse(
            body=io.BytesIO(content), status=status, preload_content=False,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        resp._content = content
        resp.headers["Content-Type"] = "application/json"
        resp.url = request.url or ""
        resp.request = request
        resp.reason = "OK" if status < 400 else "Error"
        return resp

    def close(self) -> None:
        pass

    def body(self, i: int) -> Any:
        raw = self.requests[i].body
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def settings(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "home": tmp_path,
        "temporal_address": "temporal.example.com:7233",
        "store_url": "gs://bucket/conjure",
        "cluster_name": "prod",
        "gcp_project": "proj",
        "gcp_zone": "us-central1-a",
        "azure_subscription_id": "sub-1",
        "azure_resource_group": "rg",
        "azure_subnet_id": "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
        "azure_ssh_public_key": "ssh-ed25519 AAAA test",
    }
    base.update(kw)
    return Settings(**base)


# --- Google Compute Engine ------------------------------------------------------------


def gce_client(monkeypatch: pytest.MonkeyPatch, fake: FakeHTTP) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    def make(_settings: Settings) -> Any:
        c = compute_v1.InstancesClient(credentials=AnonymousCredentials(), transport="rest")
        c._transport._session.mount("https://", fake)
        return c

    monkeypatch.setattr(gcp, "client", make)


def gce_vm(name: str, labels: dict[str, str], status: str = "RUNNING", spot: bool = False) -> dict:
    return {
        "id": "1234567890",
        "name": name,
        "status": status,
        "machineType": "https://www.googleapis.com/compute/v1/projects/proj/zones/us-central1-a/machineTypes/n1-standard-4",
        "labels": labels,
        "scheduling": {"provisioningModel": "SPOT" if spot else "STANDARD"},
    }


DONE_OP = {"name": "op-1", "status": "DONE", "operationType": "insert", "progress": 100}


def test_gce_provision_spot_gpu_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    created: dict[str, Any] = {}

    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        if req.method == "GET" and req.url and "/instances/conjure-gcp-abc" in req.url:
            if not created:
                return 404, {"error": {"code": 404, "message": "not found"}}
            return 200, gce_vm("conjure-gcp-abc", created["labels"], spot=True)
        if req.method == "POST" and req.url and req.url.endswith("/instances"):
            created.update(json.loads(req.body))
            return 200, DONE_OP
        return 500, {"error": {"code": 500, "message": f"unexpected {req.method} {req.url}"}}

    fake = FakeHTTP(handler)
    gce_client(monkeypatch, fake)
    rec = gcp.provision(settings(tmp_path, provider="gcp", spot=True), "gcp-abc", T4)
    assert rec.machine_id == "gcp-abc" and rec.state == "running" and rec.spot
    insert = next(r for r in fake.requests if r.method == "POST")
    assert insert.url.startswith(
        "https://compute.googleapis.com/compute/v1/projects/proj/zones/us-central1-a/instances"
    )
    body = created
    assert body["name"] == "conjure-gcp-abc"
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-4"
    assert body["labels"] == {
        "conjure-machine-id": "gcp-abc", "conjure-cluster": "prod", "conjure-machine-type": "t4",
    }  # fmt: skip
    assert body["guestAccelerators"] == [
        {
            "acceleratorCount": 1,
            "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
        }
    ]
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    script = items["startup-script"]
    assert "conjure agent --machine-id gcp-abc" in script
    assert "CONJURE_TEMPORAL_ADDRESS=temporal.example.com:7233" in script
    assert body["disks"][0]["initializeParams"]["sourceImage"].endswith("family/debian-12")

    # A retried provision finds the VM and inserts nothing.
    fake.requests.clear()
    assert (
        gcp.provision(settings(tmp_path, provider="gcp", spot=True), "gcp-abc", T4).machine_id
        == "gcp-abc"
    )
    assert [r.method for r in fake.requests] == ["GET"]


def test_gce_on_demand_cpu_has_no_accelerator(tmp_path: Path) -> None:
    vm = gcp.instance_resource(settings(tmp_path, provider="gcp"), "gcp-cpu", CPU)
    assert not vm.guest_accelerators
    assert vm.scheduling.provisioning_model != "SPOT"
    assert vm.machine_type.endswith("/e2-medium")


def test_gce_list_and_terminate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        if (
            req.method == "GET"
            and req.url
            and "/instances?" in req.url
            or req.url.endswith("/instances")
        ):
            return 200, {
                "items": [
                    gce_vm(
                        "conjure-gcp-1", {"conjure-machine-id": "gcp-1", "conjure-cluster": "prod"}
                    ),
                    gce_vm(
                        "conjure-gcp-2",
                        {"conjure-machine-id": "gcp-2", "conjure-cluster": "prod"},
                        "TERMINATED",
                    ),
                ]
            }
        if req.method == "DELETE" and "conjure-gcp-1" in (req.url or ""):
            return 200, {**DONE_OP, "operationType": "delete"}
        if req.method == "DELETE":
            return 404, {"error": {"code": 404, "message": "not found"}}
        return 500, {}

    fake = FakeHTTP(handler)
    gce_client(monkeypatch, fake)
    s = settings(tmp_path, provider="gcp")
    listed = gcp.list_instances(s)
    assert [(i.machine_id, i.state) for i in listed] == [("gcp-1", "running"), ("gcp-2", "stopped")]
    assert 'labels.conjure-cluster = "prod"' in requests.utils.unquote(
        fake.requests[0].url
    ).replace("+", " ")
    gcp.terminate(s, "gcp-1")
    gcp.terminate(s, "gcp-gone")  # 404: already gone, no error
    deletes = [r.url for r in fake.requests if r.method == "DELETE"]
    assert deletes[0].endswith("/projects/proj/zones/us-central1-a/instances/conjure-gcp-1")


# --- Azure ----------------------------------------------------------------------------


class FakeCredential:
    def get_token(self, *scopes: str, **kw: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(
            "fake-token", int((datetime.now(timezone.utc) + timedelta(hours=1)).timestamp())
        )


def azure_client(monkeypatch: pytest.MonkeyPatch, fake: FakeHTTP) -> None:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.mgmt.compute import ComputeManagementClient

    def make(s: Settings) -> Any:
        session = requests.Session()
        session.mount("https://", fake)
        return ComputeManagementClient(
            FakeCredential(), s.azure_subscription_id,
            transport=RequestsTransport(session=session, session_owner=False),
        )  # fmt: skip

    monkeypatch.setattr(azure, "client", make)


def azure_vm(name: str, body: dict[str, Any], state: str = "Succeeded") -> dict[str, Any]:
    return {
        "id": f"/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        "name": name,
        "location": "eastus",
        "tags": body.get("tags", {}),
        "properties": {
            **body.get("properties", {}),
            "provisioningState": state,
            "vmId": "vm-uuid-1",
        },
    }


def test_azure_provision_spot_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made: dict[str, Any] = {}

    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        path = (req.url or "").split("?")[0]
        if path.endswith("/virtualMachines/conjure-azure-abc"):
            if req.method == "GET":
                if not made:
                    return 404, {"error": {"code": "ResourceNotFound", "message": "not found"}}
                return 200, azure_vm("conjure-azure-abc", made)
            if req.method == "PUT":
                made.update(json.loads(req.body))
                return 200, azure_vm("conjure-azure-abc", made)
        return 500, {"error": {"code": "Unexpected", "message": f"{req.method} {req.url}"}}

    fake = FakeHTTP(handler)
    azure_client(monkeypatch, fake)
    s = settings(tmp_path, provider="azure", spot=True)
    rec = azure.provision(s, "azure-abc", T4)
    assert rec.machine_id == "azure-abc" and rec.state == "running" and rec.spot
    put = next(r for r in fake.requests if r.method == "PUT")
    assert (
        "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/conjure-azure-abc"
        in put.url
    )
    assert put.headers["Authorization"] == "Bearer fake-token"
    props = made["properties"]
    assert made["tags"] == {
        "conjure-machine-id": "azure-abc",
        "conjure-cluster": "prod",
        "conjure-machine-type": "t4",
    }
    assert props["hardwareProfile"]["vmSize"] == "Standard_NC4as_T4_v3"
    assert props["priority"] == "Spot" and props["evictionPolicy"] == "Delete"
    assert props["billingProfile"]["maxPrice"] == -1
    script = base64.b64decode(props["osProfile"]["customData"]).decode()
    assert "conjure agent --machine-id azure-abc" in script
    assert "CONJURE_STORE_URL=gs://bucket/conjure" in script
    assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]
    assert nic["properties"]["deleteOption"] == "Delete"
    assert (
        nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] == s.azure_subnet_id
    )
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert props["storageProfile"]["imageReference"]["offer"] == "debian-12"

    fake.requests.clear()  # a retried provision finds the VM
    azure.provision(s, "azure-abc", T4)
    assert [r.method for r in fake.requests] == ["GET"]


def test_azure_list_and_terminate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def handler(req: requests.PreparedRequest) -> tuple[int, Any]:
        path = (req.url or "").split("?")[0]
        if req.method == "GET" and path.endswith("/virtualMachines"):
            mine = {
                "tags": {"conjure-machine-id": "azure-1", "conjure-cluster": "prod"},
                "properties": {"priority": "Regular"},
            }
            other = {
                "tags": {"conjure-machine-id": "azure-9", "conjure-cluster": "other"},
                "properties": {},
            }
            plain = {"tags": {}, "properties": {}}
            return 200, {
                "value": [
                    azure_vm("conjure-azure-1", mine),
                    azure_vm("x", other),
                    azure_vm("y", plain),
                ]
            }
        if req.method == "DELETE" and path.endswith("/conjure-azure-1"):
            return 200, {}
        if req.method == "DELETE":
            return 404, {"error": {"code": "ResourceNotFound", "message": "gone"}}
        return 500, {}

    fake = FakeHTTP(handler)
    azure_client(monkeypatch, fake)
    s = settings(tmp_path, provider="azure")
    assert [(i.machine_id, i.state, i.spot) for i in azure.list_instances(s)] == [
        ("azure-1", "running", False)
    ]
    azure.terminate(s, "azure-1")
    azure.terminate(s, "azure-gone")  # 404: already gone
    assert [r.method for r in fake.requests].count("DELETE") == 2


def test_missing_settings_are_one_clear_error(tmp_path: Path) -> None:
    from conjure.infra.providers.base import ProviderError

    with pytest.raises(ProviderError, match="gcp_project"):
        gcp.provision(Settings(home=tmp_path, provider="gcp", gcp_project=""), "gcp-x", CPU)
    with pytest.raises(ProviderError, match="azure_ssh_public_key"):
        azure.vm_resource(
            settings(tmp_path, provider="azure", azure_ssh_public_key=""), "azure-x", CPU
        )
    with pytest.raises(ProviderError, match="temporal_address"):
        azure.vm_resource(settings(tmp_path, provider="azure", temporal_address=""), "azure-x", CPU)
