"""What every provider module shares: the interface it implements (`Provider`), the
tags, the lazy SDK import, and the startup script a cloud machine boots with. The record
every provider returns is `Instance` (workflows/models.py: the reconciler reads it too).
"""

from __future__ import annotations

import base64
import importlib
from pathlib import Path
from string import Template
from types import ModuleType
from typing import Protocol

from conjure.infra.config import Settings
from conjure.workflows.models import Instance, MachineType

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Tag (label) names on every cloud instance. GCE labels allow only [a-z0-9_-].
TAG_MACHINE_ID = "conjure-machine-id"
TAG_CLUSTER = "conjure-cluster"
TAG_MACHINE_TYPE = "conjure-machine-type"


class ProviderError(Exception):
    """A provider problem retrying cannot fix: missing SDK, missing setting, bad type."""


class Provider(Protocol):
    """A provider is a module of four plain functions, each taking `settings` first and
    speaking in `Instance` records; every provider module is registered in
    infra/providers/__init__.py, where mypy checks it against this Protocol."""

    def provision(self, settings: Settings, machine_id: str, machine_type: MachineType) -> Instance:
        """Start the machine; idempotent by machine id (an instance tagged with it is reused)."""
        ...

    def terminate(self, settings: Settings, machine_id: str) -> None:
        """End the machine; idempotent: one already gone is fine."""
        ...

    def list_instances(self, settings: Settings) -> list[Instance]:
        """Every instance tagged as this cluster's."""
        ...

    def describe(self, settings: Settings, machine_id: str) -> Instance | None:
        """The machine's instance, None when the provider has none."""
        ...


def require(module: str, extra: str) -> ModuleType:
    """Import a cloud SDK lazily: `pip install conjure` works without it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ProviderError(
            f"the {extra} provider needs its SDK: pip install 'conjure[{extra}]'"
        ) from None


def need(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        raise ProviderError(
            "set "
            + ", ".join(f"{n} (CONJURE_{n.upper()})" for n in missing)
            + f" for the {settings.provider} provider"
        )


def instance_type(mtype: MachineType, provider: str) -> str:
    it = mtype.instance_types.get(provider)
    if not it:
        raise ProviderError(
            f"machine type {mtype.name} has no {provider} instance type; set "
            f"[machine_types.{mtype.name}] instance_types.{provider} in config.toml"
        )
    return it


def use_spot(settings: Settings, mtype: MachineType) -> bool:
    return bool(settings.spot and mtype.spot)


def tags(settings: Settings, machine_id: str, mtype: MachineType) -> dict[str, str]:
    return {
        TAG_MACHINE_ID: machine_id,
        TAG_CLUSTER: settings.cluster_name,
        TAG_MACHINE_TYPE: mtype.name.lower(),
    }


def instance_name(machine_id: str) -> str:
    return f"conjure-{machine_id}".lower()


def _b64_file(path: Path | None) -> str:
    return base64.b64encode(path.read_bytes()).decode() if path else ""


def agent_env(settings: Settings) -> dict[str, str]:
    """The agent's settings on a cloud machine: where Temporal and the store are."""
    env = {
        "CONJURE_HOME": "/var/lib/conjure",
        "CONJURE_TEMPORAL_ADDRESS": settings.temporal_address,
        "CONJURE_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "CONJURE_STORE_URL": settings.store,
        "CONJURE_BASE_IMAGE": settings.base_image,
        "CONJURE_BASE_IMAGE_PULL": "true",
    }
    if settings.s3_endpoint_url:  # an S3-compatible store (MinIO, R2): the machine needs it too
        env["CONJURE_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if settings.temporal_tls or settings.temporal_tls_cert or settings.temporal_api_key:
        env["CONJURE_TEMPORAL_TLS"] = "true"
    if settings.temporal_tls_ca:
        env["CONJURE_TEMPORAL_TLS_CA"] = "/etc/conjure/tls/ca.pem"
    if settings.temporal_tls_cert:
        env["CONJURE_TEMPORAL_TLS_CERT"] = "/etc/conjure/tls/cert.pem"
    if settings.temporal_tls_key:
        env["CONJURE_TEMPORAL_TLS_KEY"] = "/etc/conjure/tls/key.pem"
    if settings.temporal_api_key:
        env["CONJURE_TEMPORAL_API_KEY"] = settings.temporal_api_key
    for k, v in env.items():
        if "\n" in v or "\r" in v:
            raise ProviderError(f"{k} must be one line")
    return env


def startup_script(settings: Settings, machine_id: str, mtype: MachineType) -> str:
    """The boot script (cloud-init user data, GCE startup-script, Azure custom data):
    installs Docker and the agent, and starts the agent as a service."""
    if not settings.temporal_address:
        raise ProviderError(
            "cloud machines need a Temporal server they can reach: set temporal_address "
            "(the embedded dev server listens on 127.0.0.1 only)"
        )
    env = "\n".join(f"{k}={v}" for k, v in agent_env(settings).items())
    return Template((TEMPLATES / "startup.sh").read_text()).substitute(
        machine_id=machine_id,
        machine_type=mtype.name,
        gpus=str(mtype.gpus),
        agent_package=settings.agent_package,
        agent_env=env,
        tls_ca_b64=_b64_file(settings.temporal_tls_ca),
        tls_cert_b64=_b64_file(settings.temporal_tls_cert),
        tls_key_b64=_b64_file(settings.temporal_tls_key),
    )
