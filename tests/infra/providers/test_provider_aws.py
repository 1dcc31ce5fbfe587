"""The `aws` provider end to end against a real EC2 API emulator: `moto_server`
on 127.0.0.1 (PyPI moto[server]), through boto3. The reconciler runs in the real
pool workflow on the real Temporal dev server of the session stack."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests
from temporalio.worker import Worker

from conjure.activities.provider import ProviderActivities
from conjure.infra.config import Settings
from conjure.infra.providers import aws
from conjure.infra.temporal import make_client
from conjure.workflows.models import MachineType, PoolConfig, PoolInput
from conjure.workflows.pool import PoolWorkflow
from tests.conftest import free_port


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(url, timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    yield url
    proc.terminate()
    proc.wait(10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def ec2(url: str):  # type: ignore[no-untyped-def]
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=url)


def aws_settings(url: str, tmp_path: Path, **kw: object) -> Settings:
    image = ec2(url).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    base = {
        "home": tmp_path,
        "provider": "aws",
        "aws_endpoint_url": url,
        "aws_region": "us-east-1",
        "aws_image_id": image,
        "temporal_address": "temporal.example.com:7233",
        "temporal_namespace": "ml",
        "temporal_tls": True,
        "store_url": "s3://bucket/conjure",
        "cluster_name": f"c{uuid.uuid4().hex[:6]}",
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


T4 = MachineType(
    name="T4", vcpus=4, memory_gb=16, gpus=1, price_per_hour=0.526, spot=True,
    instance_types={"aws": "g4dn.xlarge"},
)  # fmt: skip


def test_provision_describe_terminate(moto_url: str, tmp_path: Path) -> None:
    s = aws_settings(moto_url, tmp_path, spot=True)
    inst = aws.provision(s, "aws-0123456789", T4)
    assert inst.machine_id == "aws-0123456789" and inst.instance_type == "g4dn.xlarge"
    again = aws.provision(s, "aws-0123456789", T4)  # a retried provision
    assert again.instance_id == inst.instance_id

    c = ec2(moto_url)
    desc = c.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0]
    assert desc["InstanceType"] == "g4dn.xlarge"
    assert desc.get("InstanceLifecycle") == "spot"
    tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
    assert tags["conjure-machine-id"] == "aws-0123456789"
    assert tags["conjure-cluster"] == s.cluster_name
    assert tags["conjure-machine-type"] == "t4"
    assert tags["Name"] == "conjure-aws-0123456789"
    ud = c.describe_instance_attribute(InstanceId=inst.instance_id, Attribute="userData")
    script = base64.b64decode(ud["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash")
    assert "conjure agent --machine-id aws-0123456789" in script
    assert "CONJURE_TEMPORAL_ADDRESS=temporal.example.com:7233" in script
    assert "CONJURE_TEMPORAL_NAMESPACE=ml" in script and "CONJURE_TEMPORAL_TLS=true" in script
    assert "CONJURE_STORE_URL=s3://bucket/conjure" in script
    assert "docker.io" in script and "systemctl enable --now conjure-agent" in script

    assert [i.machine_id for i in aws.list_instances(s)] == ["aws-0123456789"]
    assert aws.describe(s, "aws-0123456789").state in ("pending", "running")
    aws.terminate(s, "aws-0123456789")
    aws.terminate(s, "aws-0123456789")  # idempotent
    state = c.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    assert aws.list_instances(s) == []


def test_on_demand_without_spot_setting(moto_url: str, tmp_path: Path) -> None:
    s = aws_settings(moto_url, tmp_path)  # spot = false
    req = aws.request(s, "aws-x", T4, "ami-1")
    assert "InstanceMarketOptions" not in req
    req = aws.request(aws_settings(moto_url, tmp_path, spot=True), "aws-x", T4, "ami-1")
    assert req["InstanceMarketOptions"]["MarketType"] == "spot"
    aws.terminate(s, "never-made")  # nothing to do, no error


def _orphan(c, cluster: str, machine_id: str, image: str) -> str:  # type: ignore[no-untyped-def]
    tags = [
        {"Key": "conjure-machine-id", "Value": machine_id},
        {"Key": "conjure-cluster", "Value": cluster},
    ]
    r = c.run_instances(
        ImageId=image, InstanceType="t3.medium", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )  # fmt: skip
    return r["Instances"][0]["InstanceId"]


async def test_reconciler_terminates_an_orphan(
    conjure_stack: Settings, moto_url: str, tmp_path: Path
) -> None:
    s = aws_settings(moto_url, tmp_path)
    c = ec2(moto_url)
    orphan = _orphan(c, s.cluster_name, "aws-orphan00001", s.aws_image_id)
    other_cluster = _orphan(c, "someone-else", "aws-theirs00001", s.aws_image_id)
    untagged = c.run_instances(
        ImageId=s.aws_image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]

    client = await make_client(conjure_stack)
    queue = f"aws-test-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[PoolWorkflow],
            activities=ProviderActivities(s).all(),
            activity_executor=executor,
        ):
            handle = await client.start_workflow(
                PoolWorkflow.run,
                PoolInput(config=PoolConfig(provider="aws", reconcile_interval_seconds=1)),
                id=f"pool-aws-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            try:
                for _ in range(300):
                    view = await handle.query(PoolWorkflow.view)
                    if view.orphans_terminated:
                        break
                    await asyncio.sleep(0.1)
                assert view.orphans_terminated == 1
                for _ in range(100):
                    states = {
                        i["InstanceId"]: i["State"]["Name"]
                        for r in c.describe_instances(
                            InstanceIds=[orphan, other_cluster, untagged]
                        )["Reservations"]
                        for i in r["Instances"]
                    }
                    if states[orphan] in ("shutting-down", "terminated"):
                        break
                    await asyncio.sleep(0.1)
                assert states[orphan] in ("shutting-down", "terminated")
                assert states[other_cluster] in (
                    "pending",
                    "running",
                )  # another cluster's: not ours
                assert states[untagged] in ("pending", "running")  # not Conjure's at all
            finally:
                await handle.terminate()
