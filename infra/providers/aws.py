"""The `aws` provider: one EC2 instance per machine (boto3).

Every instance carries the tags conjure-machine-id, conjure-cluster and
conjure-machine-type; `provision` first looks for a live instance with the
machine's id and passes the id as the EC2 ClientToken, so a retried call never
makes a second instance. Spot goes through InstanceMarketOptions (one-time,
terminate on interruption). The instance boots with the startup script as
cloud-init user data.
"""

from __future__ import annotations

from typing import Any

from conjure.infra.config import Settings
from conjure.infra.providers.base import (
    TAG_CLUSTER,
    TAG_MACHINE_ID,
    TAG_MACHINE_TYPE,
    ProviderError,
    instance_name,
    instance_type,
    require,
    startup_script,
    tags,
    use_spot,
)
from conjure.workflows.models import Instance, MachineType

LIVE = ["pending", "running", "stopping", "stopped"]
DEBIAN_OWNER = "136693071363"  # Debian's AWS account


def client(settings: Settings) -> Any:
    boto3 = require("boto3", "aws")
    kwargs: dict[str, Any] = {"region_name": settings.aws_region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return boto3.client("ec2", **kwargs)


def _record(inst: dict[str, Any]) -> Instance:
    t = {x["Key"]: x["Value"] for x in inst.get("Tags", [])}
    state = inst["State"]["Name"]
    return Instance(
        machine_id=t.get(TAG_MACHINE_ID, ""),
        provider="aws",
        instance_id=inst["InstanceId"],
        machine_type=t.get(TAG_MACHINE_TYPE, ""),
        instance_type=inst.get("InstanceType", ""),
        state="terminated" if state in ("shutting-down", "terminated") else state,
        spot=inst.get("InstanceLifecycle") == "spot",
    )


def _find(ec2: Any, filters: list[dict[str, Any]]) -> list[Instance]:
    out: list[Instance] = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for res in page["Reservations"]:
            out.extend(_record(i) for i in res["Instances"])
    return out


def _by_machine(ec2: Any, settings: Settings, machine_id: str) -> list[Instance]:
    return _find(
        ec2,
        [
            {"Name": f"tag:{TAG_MACHINE_ID}", "Values": [machine_id]},
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [settings.cluster_name]},
            {"Name": "instance-state-name", "Values": LIVE},
        ],
    )


def _image(ec2: Any, settings: Settings) -> str:
    if settings.aws_image_id:
        return settings.aws_image_id
    images = ec2.describe_images(
        Owners=[DEBIAN_OWNER],
        Filters=[
            {"Name": "name", "Values": ["debian-12-amd64-*"]},
            {"Name": "state", "Values": ["available"]},
        ],
    )["Images"]
    if not images:
        raise ProviderError("no Debian 12 AMI found: set aws_image_id (CONJURE_AWS_IMAGE_ID)")
    return max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"]


def request(
    settings: Settings, machine_id: str, mtype: MachineType, image_id: str
) -> dict[str, Any]:
    """The RunInstances request for one machine (pure: tests read it too)."""
    tag_list = [{"Key": k, "Value": v} for k, v in tags(settings, machine_id, mtype).items()]
    tag_list.append({"Key": "Name", "Value": instance_name(machine_id)})
    req: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": instance_type(mtype, "aws"),
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": machine_id,
        "UserData": startup_script(settings, machine_id, mtype),
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {"VolumeSize": settings.disk_gb, "DeleteOnTermination": True},
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",
    }
    if use_spot(settings, mtype):
        req["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    if settings.aws_subnet_id:
        req["SubnetId"] = settings.aws_subnet_id
    if settings.aws_security_group_ids:
        req["SecurityGroupIds"] = list(settings.aws_security_group_ids)
    if settings.aws_key_name:
        req["KeyName"] = settings.aws_key_name
    if settings.aws_instance_profile:
        req["IamInstanceProfile"] = {"Name": settings.aws_instance_profile}
    return req


def provision(settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
    ec2 = client(settings)
    found = [i for i in _by_machine(ec2, settings, machine_id) if i.state != "terminated"]
    if found:
        return found[0]  # idempotent: already provisioned
    req = request(settings, machine_id, machine_type, _image(ec2, settings))
    inst = ec2.run_instances(**req)["Instances"][0]
    return _record(inst)


def terminate(settings: Settings, machine_id: str) -> None:
    ec2 = client(settings)
    ids = [i.instance_id for i in _by_machine(ec2, settings, machine_id)]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)


def list_instances(settings: Settings) -> list[Instance]:
    ec2 = client(settings)
    return _find(
        ec2,
        [
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [settings.cluster_name]},
            {"Name": "instance-state-name", "Values": LIVE},
        ],
    )


def describe(settings: Settings, machine_id: str) -> Instance | None:
    found = _by_machine(client(settings), settings, machine_id)
    return found[0] if found else None
