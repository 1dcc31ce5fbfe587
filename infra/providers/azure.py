"""The `azure` provider: one Azure VM per machine (azure-mgmt-compute).

The VM is named `conjure-<machine id>` in the configured resource group (a PUT of
the same name is idempotent) and tagged conjure-machine-id, conjure-cluster and
conjure-machine-type. Its NIC and OS disk are created with the VM and deleted
with it (network API version 2020-11-01), so nothing is left behind. Spot uses
priority Spot with eviction policy Delete. The VM boots with the startup script
as custom data (cloud-init runs it).
"""

from __future__ import annotations

import base64
from typing import Any

from conjure.infra.config import Settings
from conjure.infra.providers.base import (
    TAG_CLUSTER,
    TAG_MACHINE_ID,
    TAG_MACHINE_TYPE,
    ProviderError,
    instance_name,
    instance_type,
    need,
    require,
    startup_script,
    tags,
    use_spot,
)
from conjure.workflows.models import Instance, MachineType

STATES = {"Creating": "pending", "Updating": "running", "Succeeded": "running",
          "Deleting": "terminated", "Failed": "stopped", "Canceled": "stopped"}  # fmt: skip


def client(settings: Settings) -> Any:
    compute = require("azure.mgmt.compute", "azure")
    identity = require("azure.identity", "azure")
    return compute.ComputeManagementClient(
        identity.DefaultAzureCredential(), settings.azure_subscription_id
    )


def _models() -> Any:
    return require("azure.mgmt.compute.models", "azure")


def _record(vm: Any) -> Instance:
    t = dict(vm.tags or {})
    return Instance(
        machine_id=t.get(TAG_MACHINE_ID, ""),
        provider="azure",
        instance_id=vm.vm_id or vm.id or vm.name,
        machine_type=t.get(TAG_MACHINE_TYPE, ""),
        instance_type=vm.hardware_profile.vm_size if vm.hardware_profile else "",
        state=STATES.get(vm.provisioning_state or "", "running"),
        spot=(vm.priority or "") == "Spot",
    )


def vm_resource(settings: Settings, machine_id: str, mtype: MachineType) -> Any:
    """The VirtualMachine to create for one machine (pure: tests read it too)."""
    m = _models()
    if not settings.azure_ssh_public_key:
        raise ProviderError(
            "set azure_ssh_public_key (CONJURE_AZURE_SSH_PUBLIC_KEY): Azure Linux VMs need one"
        )
    try:
        publisher, offer, sku, version = settings.azure_image.split(":")
    except ValueError:
        raise ProviderError("azure_image must be publisher:offer:sku:version") from None
    name = instance_name(machine_id)
    user = settings.azure_admin_username
    script = startup_script(settings, machine_id, mtype)
    vm = m.VirtualMachine(
        location=settings.azure_location,
        tags=tags(settings, machine_id, mtype),
        hardware_profile=m.HardwareProfile(vm_size=instance_type(mtype, "azure")),
        storage_profile=m.StorageProfile(
            image_reference=m.ImageReference(
                publisher=publisher, offer=offer, sku=sku, version=version
            ),
            os_disk=m.OSDisk(
                create_option="FromImage", delete_option="Delete", disk_size_gb=settings.disk_gb
            ),
        ),
        os_profile=m.OSProfile(
            computer_name=name[:64],
            admin_username=user,
            custom_data=base64.b64encode(script.encode()).decode(),
            linux_configuration=m.LinuxConfiguration(
                disable_password_authentication=True,
                ssh=m.SshConfiguration(
                    public_keys=[
                        m.SshPublicKey(
                            path=f"/home/{user}/.ssh/authorized_keys",
                            key_data=settings.azure_ssh_public_key,
                        )
                    ]
                ),
            ),
        ),
        network_profile=m.NetworkProfile(
            network_api_version="2020-11-01",
            network_interface_configurations=[
                m.VirtualMachineNetworkInterfaceConfiguration(
                    name=f"{name}-nic",
                    primary=True,
                    delete_option="Delete",
                    ip_configurations=[
                        m.VirtualMachineNetworkInterfaceIPConfiguration(
                            name=f"{name}-ip", subnet=m.SubResource(id=settings.azure_subnet_id)
                        )
                    ],
                )
            ],
        ),
    )
    if use_spot(settings, mtype):
        vm.priority = "Spot"
        vm.eviction_policy = "Delete"
        vm.billing_profile = m.BillingProfile(max_price=-1)  # pay up to the on-demand price
    return vm


def _get(cl: Any, settings: Settings, machine_id: str) -> Any | None:
    errors = require("azure.core.exceptions", "azure")
    try:
        return cl.virtual_machines.get(settings.azure_resource_group, instance_name(machine_id))
    except errors.ResourceNotFoundError:
        return None


def _need(settings: Settings) -> None:
    need(settings, "azure_subscription_id", "azure_resource_group")


def provision(settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
    _need(settings)
    need(settings, "azure_subnet_id")
    cl = client(settings)
    vm = _get(cl, settings, machine_id)
    if vm is None or (vm.provisioning_state or "") in ("Failed", "Canceled"):
        poller = cl.virtual_machines.begin_create_or_update(
            settings.azure_resource_group,
            instance_name(machine_id),
            vm_resource(settings, machine_id, machine_type),
        )
        vm = poller.result()
    return _record(vm)


def terminate(settings: Settings, machine_id: str) -> None:
    _need(settings)
    errors = require("azure.core.exceptions", "azure")
    cl = client(settings)
    try:
        cl.virtual_machines.begin_delete(
            settings.azure_resource_group, instance_name(machine_id)
        ).result()
    except errors.ResourceNotFoundError:
        pass  # already gone


def list_instances(settings: Settings) -> list[Instance]:
    _need(settings)
    out = []
    for vm in client(settings).virtual_machines.list(settings.azure_resource_group):
        t = dict(vm.tags or {})
        if t.get(TAG_CLUSTER) == settings.cluster_name and t.get(TAG_MACHINE_ID):
            out.append(_record(vm))
    return out


def describe(settings: Settings, machine_id: str) -> Instance | None:
    _need(settings)
    vm = _get(client(settings), settings, machine_id)
    return _record(vm) if vm is not None else None
