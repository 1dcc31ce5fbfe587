"""Pool shards: which pool workflow a run leases from, and each shard's share of the limits.

With `pool_shards = N` the machines are split over N `PoolWorkflow`s, each an entity
workflow of its own that continues-as-new on its own. Shard 0 keeps the single pool's
id (`conjure-pool`), so the default (one shard) is the pool as it always was, and a
cluster that grows to N shards keeps its running pool, machines and history as
shard 0; shard k > 0 is `conjure-pool-k`.

A run goes to shard `run_id mod N` (`pool_shard_key = "run"`, the default: runs of
one type spread evenly), or to the shard of a stable hash of its machine type
(`"machine_type"`: all of a type in one shard, so an idle machine of the type is
always found by the next run of it).

Limits: `max_concurrent_runs` is split into N shares that add up to it (shard k
gets one more while k < limit mod N); so is every `max_machines` cap, except a
machine type's own cap under `"machine_type"` sharding, which its one shard keeps
whole. A split limit must be at least N (a share of 0 would mean "no limit").
The total is never exceeded; a shard whose share is used up makes its runs wait
even while another shard has room.

Machines made by shard k > 0 carry it in their id (`<provider>-s<k>-<hex>`), so each
shard's reconciler reaps only orphans of its own (shard 0: unmarked ids, as the
single pool made them) and a machine id names the shard that owns it.

Deterministic (workflow code calls it): no I/O, no clock; crc32, not hash().
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from conjure.workflows.keys import POOL_WORKFLOW_ID
from conjure.workflows.models import PoolConfig, PoolView

SHARD_KEYS = ("run", "machine_type")
_MARK = re.compile(r"-s(\d+)-[0-9a-f]+$")


def shard_workflow_id(k: int, base: str = POOL_WORKFLOW_ID) -> str:
    return base if k == 0 else f"{base}-{k}"


def shard_workflow_ids(shards: int, base: str = POOL_WORKFLOW_ID) -> list[str]:
    return [shard_workflow_id(k, base) for k in range(max(shards, 1))]


def shard_index(run_id: int, machine_type: str, shards: int, key: str = "run") -> int:
    if shards <= 1:
        return 0
    if key == "machine_type":
        return zlib.crc32(machine_type.encode()) % shards
    return run_id % shards


def pool_for_run(
    run_id: int, machine_type: str, shards: int, key: str = "run", base: str = POOL_WORKFLOW_ID
) -> str:
    """The id of the pool workflow a run leases from."""
    return shard_workflow_id(shard_index(run_id, machine_type, shards, key), base)


def new_machine_id(provider: str, shard: int, hex_id: str) -> str:
    return f"{provider}-{hex_id}" if shard == 0 else f"{provider}-s{shard}-{hex_id}"


def machine_shard(machine_id: str) -> int:
    """The shard that made a machine (0 for ids without a mark)."""
    m = _MARK.search(machine_id)
    return int(m.group(1)) if m else 0


def share(limit: int, shards: int, k: int) -> int:
    """Shard k's share of a limit split over `shards` (the shares add up to it)."""
    return limit // shards + (1 if k < limit % shards else 0)


def _split_caps(config: PoolConfig, shards: int, key: str) -> list[str]:
    """The max_machines names whose cap is split (the rest stay whole in every shard)."""
    if key != "machine_type":
        return list(config.max_machines)
    providers = {config.provider, *config.other_providers, "ssh"}
    return [name for name in config.max_machines if name in providers]


def check_shards(config: PoolConfig, shards: int, key: str) -> None:
    """ValueError (one line) when these limits cannot be split over `shards`."""
    if shards < 1:
        raise ValueError(f"pool_shards must be at least 1, not {shards}")
    if key not in SHARD_KEYS:
        raise ValueError(f"pool_shard_key must be one of {', '.join(SHARD_KEYS)}, not {key!r}")
    if shards == 1:
        return
    limit = config.max_concurrent_runs
    if 0 < limit < shards:
        raise ValueError(
            f"max_concurrent_runs = {limit} cannot be split over {shards} pool shards "
            f"(each needs at least 1): raise it or lower pool_shards"
        )
    for name in _split_caps(config, shards, key):
        cap = config.max_machines[name]
        if 0 < cap < shards:
            raise ValueError(
                f"max_machines {name} = {cap} cannot be split over {shards} pool shards "
                f"(each needs at least 1): raise it or lower pool_shards"
            )


def shard_config(config: PoolConfig, k: int, shards: int, key: str = "run") -> PoolConfig:
    """Shard k's config: its shares of the limits, and its place among the shards."""
    if shards <= 1:
        return config.model_copy(update={"shard": 0, "shards": 1, "shard_key": key})
    split = set(_split_caps(config, shards, key))
    caps = {n: share(c, shards, k) if n in split else c for n, c in config.max_machines.items()}
    return config.model_copy(
        update={
            "max_concurrent_runs": share(config.max_concurrent_runs, shards, k),
            "max_machines": caps,
            "shard": k,
            "shards": shards,
            "shard_key": key,
        }
    )


def merge_views(views: Sequence[PoolView]) -> PoolView:
    """One view of all shards (shard 0 first): machines and queues side by side, the
    split limits added back up, the reconciler's counts summed."""
    first = views[0]
    if len(views) == 1:
        return first
    split = set(_split_caps(first.config, len(views), first.config.shard_key))
    caps = dict(first.config.max_machines)
    for name in split:
        caps[name] = sum(v.config.max_machines.get(name, 0) for v in views)
    config = first.config.model_copy(
        update={
            "max_concurrent_runs": sum(v.config.max_concurrent_runs for v in views),
            "max_machines": caps,
        }
    )
    stamps = [v.last_reconcile for v in views if v.last_reconcile is not None]
    return PoolView(
        machines=[m for v in views for m in v.machines],
        queue=[q for v in views for q in v.queue],
        config=config,
        last_reconcile=max(stamps) if stamps else None,
        orphans_terminated=sum(v.orphans_terminated for v in views),
        unresponsive_terminated=sum(v.unresponsive_terminated for v in views),
    )
