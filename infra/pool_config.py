"""The pool's configuration from Settings, and how a changed one reaches the running pool.

The control worker sends every pool setting when it starts (it is the authority
on the provider and its credentials); a client sends only the settings it has
explicitly (config file or CONJURE_* variables), so a laptop with no config never
resets the cluster's limits. The pool ignores a `configure` that changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from conjure.infra.config import Settings
from conjure.infra.errors import ConjureError
from conjure.workflows.models import PoolConfig, PoolConfigure, PoolInput
from conjure.workflows.pool_shards import check_shards, shard_config, shard_workflow_id

CLOUD_READY_TIMEOUT = 900.0  # a cloud machine boots, installs Docker and the agent


def pool_config(settings: Settings) -> PoolConfig:
    ready = settings.machine_ready_timeout_seconds
    if (
        settings.provider != "local"
        and "machine_ready_timeout_seconds" not in settings.model_fields_set
    ):
        ready = CLOUD_READY_TIMEOUT
    providers, caps = provider_caps(settings)
    return PoolConfig(
        provider=settings.provider,
        idle_timeout_seconds=settings.idle_timeout_seconds,
        max_concurrent_runs=settings.max_concurrent_runs,
        machine_ready_timeout_seconds=ready,
        max_machines={**caps, **settings.max_machines},
        reconcile_interval_seconds=settings.reconcile_interval_seconds,
        agent_timeout_seconds=settings.agent_timeout_seconds,
        health_check_seconds=settings.machine_health_seconds,
        other_providers=providers,
    )


def provider_caps(settings: Settings) -> tuple[list[str], dict[str, int]]:
    """The providers machine types name besides the configured one, and the caps an ssh
    fleet implies: a type served by ssh hosts has at most as many machines as hosts."""
    from conjure.infra.catalog import load_catalog
    from conjure.infra.providers import ssh

    catalog = load_catalog(settings.home / "config.toml")
    named = sorted({mt.provider for mt in catalog.values() if mt.provider} - {settings.provider})
    caps: dict[str, int] = {}
    for h in settings.ssh_hosts:
        name = ssh.host_type(settings, h)
        mt = catalog.get(name)
        if name and ((mt and mt.provider == "ssh") or (settings.provider == "ssh" and mt)):
            caps[name] = caps.get(name, 0) + 1
    if settings.ssh_hosts and ("ssh" in named or settings.provider == "ssh"):
        caps["ssh"] = len(settings.ssh_hosts)
    return named, caps


def explicit_fields(settings: Settings) -> list[str]:
    """Pool settings this process was given (config file or environment), not defaults."""
    pool_fields = set(PoolConfig.model_fields)
    given = set(settings.model_fields_set)
    if "machine_health_seconds" in given:  # its name in Settings differs from PoolConfig's
        given.add("health_check_seconds")
    return sorted(f for f in given if f in pool_fields)


async def configure_pool(client: Client, settings: Settings, *, authoritative: bool) -> None:
    """Start the pool (each of its shards) if it is not running, and send it this
    process's settings (each shard its share of the limits).

    authoritative: every pool setting (the control worker); otherwise only the
    explicit ones, and nothing at all when there are none.
    """
    config = pool_config(settings)
    shards, key = settings.pool_shards, settings.pool_shard_key
    try:
        check_shards(config, shards, key)
    except ValueError as e:
        raise ConjureError(str(e)) from None
    fields = list(PoolConfig.model_fields) if authoritative else explicit_fields(settings)
    if fields and shards > 1:
        fields = sorted({*fields, "shard", "shards", "shard_key"})
    from conjure.workflows.pool import PoolWorkflow

    async def start(k: int) -> None:
        cfg = shard_config(config, k, shards, key) if shards > 1 else config
        kwargs: dict[str, Any] = {}
        if fields:
            kwargs = {
                "start_signal": "configure",
                "start_signal_args": [PoolConfigure(config=cfg, fields=fields)],
            }
        await client.start_workflow(
            PoolWorkflow.run,
            PoolInput(config=cfg),
            id=shard_workflow_id(k),
            task_queue=settings.control_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            **kwargs,
        )

    await asyncio.gather(*(start(k) for k in range(shards)))
