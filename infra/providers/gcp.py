"""The `gcp` provider: one Compute Engine VM per machine (google-cloud-compute).

The VM is named `conjure-<machine id>` (names are unique in a zone, so a retried
`provision` finds the VM it made) and labelled conjure-machine-id,
conjure-cluster and conjure-machine-type. Spot uses the SPOT provisioning model
(deleted when preempted); GPU types (`n1-standard-4+nvidia-tesla-t4` in the
catalog: machine type + accelerator) get guest accelerators and TERMINATE on host
maintenance. The VM boots with the startup script as `startup-script` metadata.
"""

from __future__ import annotations

from typing import Any

from conjure.infra.config import Settings
from conjure.infra.providers.base import (
    TAG_CLUSTER,
    TAG_MACHINE_ID,
    TAG_MACHINE_TYPE,
    instance_name,
    instance_type,
    need,
    require,
    startup_script,
    tags,
    use_spot,
)
from conjure.workflows.models import Instance, MachineType

STATES = {
    "PROVISIONING": "pending",
    "STAGING": "pending",
    "RUNNING": "running",
    "STOPPING": "terminated",
    "STOPPED": "stopped",
    "SUSPENDING": "stopped",
    "SUSPENDED": "stopped",
    "REPAIRING": "running",
    "TERMINATED": "stopped",  # GCE's TERMINATED is a stopped VM that still exists
}


def client(settings: Settings) -> Any:
    compute_v1 = require("google.cloud.compute_v1", "gcp")
    return compute_v1.InstancesClient(transport="rest")


def _compute() -> Any:
    return require("google.cloud.compute_v1", "gcp")


def _record(vm: Any) -> Instance:
    labels = dict(vm.labels)
    return Instance(
        machine_id=labels.get(TAG_MACHINE_ID, ""),
        provider="gcp",
        instance_id=str(vm.id) if vm.id else vm.name,
        machine_type=labels.get(TAG_MACHINE_TYPE, ""),
        instance_type=vm.machine_type.rsplit("/", 1)[-1],
        state=STATES.get(vm.status, "running"),
        spot=vm.scheduling.provisioning_model == "SPOT",
    )


def instance_resource(settings: Settings, machine_id: str, mtype: MachineType) -> Any:
    """The Instance to insert for one machine (pure: tests read it too)."""
    c = _compute()
    zone = settings.gcp_zone
    machine, _, accel = instance_type(mtype, "gcp").partition("+")
    nic = c.NetworkInterface(
        access_configs=[c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    )
    if settings.gcp_subnetwork:
        nic.subnetwork = settings.gcp_subnetwork
    else:
        nic.network = settings.gcp_network
    vm = c.Instance(
        name=instance_name(machine_id),
        machine_type=f"zones/{zone}/machineTypes/{machine}",
        labels=tags(settings, machine_id, mtype),
        disks=[
            c.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=c.AttachedDiskInitializeParams(
                    source_image=settings.gcp_image, disk_size_gb=settings.disk_gb
                ),
            )
        ],
        network_interfaces=[nic],
        metadata=c.Metadata(
            items=[c.Items(key="startup-script", value=startup_script(settings, machine_id, mtype))]
        ),
        scheduling=c.Scheduling(on_host_maintenance="MIGRATE", automatic_restart=True),
    )
    if accel:
        vm.guest_accelerators = [
            c.AcceleratorConfig(
                accelerator_count=max(mtype.gpus, 1),
                accelerator_type=f"zones/{zone}/acceleratorTypes/{accel}",
            )
        ]
    if accel or mtype.gpus:
        vm.scheduling.on_host_maintenance = "TERMINATE"  # GPUs cannot live-migrate
    if use_spot(settings, mtype):
        vm.scheduling = c.Scheduling(
            provisioning_model="SPOT",
            instance_termination_action="DELETE",
            on_host_maintenance="TERMINATE",
            automatic_restart=False,
        )
    if settings.gcp_service_account:
        vm.service_accounts = [
            c.ServiceAccount(
                email=settings.gcp_service_account,
                scopes=["https://www.googleapis.com/auth/cloud-platform"],
            )
        ]
    return vm


def _get(cl: Any, settings: Settings, machine_id: str) -> Any | None:
    exceptions = require("google.api_core.exceptions", "gcp")
    try:
        return cl.get(
            project=settings.gcp_project, zone=settings.gcp_zone, instance=instance_name(machine_id)
        )
    except exceptions.NotFound:
        return None


def provision(settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
    need(settings, "gcp_project", "gcp_zone")
    cl = client(settings)
    vm = _get(cl, settings, machine_id)
    if vm is None:
        exceptions = require("google.api_core.exceptions", "gcp")
        try:
            op = cl.insert(
                project=settings.gcp_project,
                zone=settings.gcp_zone,
                instance_resource=instance_resource(settings, machine_id, machine_type),
            )
            op.result(timeout=600)
        except exceptions.Conflict:
            pass  # a retried insert: the first one made it
        vm = _get(cl, settings, machine_id)
    if vm is None:
        return Instance(machine_id=machine_id, provider="gcp", machine_type=machine_type.name)
    return _record(vm)


def terminate(settings: Settings, machine_id: str) -> None:
    need(settings, "gcp_project", "gcp_zone")
    exceptions = require("google.api_core.exceptions", "gcp")
    cl = client(settings)
    try:
        op = cl.delete(
            project=settings.gcp_project, zone=settings.gcp_zone, instance=instance_name(machine_id)
        )
        op.result(timeout=600)
    except exceptions.NotFound:
        pass  # already gone


def list_instances(settings: Settings) -> list[Instance]:
    need(settings, "gcp_project", "gcp_zone")
    c = _compute()
    cl = client(settings)
    req = c.ListInstancesRequest(
        project=settings.gcp_project,
        zone=settings.gcp_zone,
        filter=f'labels.{TAG_CLUSTER} = "{settings.cluster_name}"',
    )
    out = []
    for vm in cl.list(request=req):
        rec = _record(vm)
        if rec.machine_id and dict(vm.labels).get(TAG_CLUSTER) == settings.cluster_name:
            out.append(rec)
    return out


def describe(settings: Settings, machine_id: str) -> Instance | None:
    need(settings, "gcp_project", "gcp_zone")
    vm = _get(client(settings), settings, machine_id)
    return _record(vm) if vm is not None else None
