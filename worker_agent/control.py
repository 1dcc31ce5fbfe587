"""The control worker (`conjure worker`): every workflow plus the control-queue activities
(provider and pipeline). It holds no state of its own: start more of them to scale out."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from conjure.activities.hyper import HyperActivities
from conjure.activities.pipeline import PipelineActivities
from conjure.activities.provider import ProviderActivities
from conjure.activities.run_reaper import reap_forever
from conjure.activities.secrets import SecretActivities
from conjure.infra.config import Settings
from conjure.infra.pool_config import configure_pool
from conjure.infra.temporal import make_client
from conjure.workflows.counter import CounterWorkflow
from conjure.workflows.hyper import HyperWorkflow
from conjure.workflows.pipeline import PipelineWorkflow
from conjure.workflows.pool import PoolWorkflow
from conjure.workflows.run import RunWorkflow
from conjure.workflows.run_reap import RunReapWorkflow
from conjure.workflows.stop_condition_workflow import StopConditionWorkflow

WORKFLOWS = [
    RunWorkflow,
    PoolWorkflow,
    CounterWorkflow,
    PipelineWorkflow,
    StopConditionWorkflow,
    HyperWorkflow,
    RunReapWorkflow,
]


CONTROL_THREADS = 16


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor) -> Worker:
    return Worker(
        client,
        task_queue=settings.control_task_queue,
        workflows=WORKFLOWS,
        activities=ProviderActivities(settings).all()
        + PipelineActivities(client, settings).all()
        + HyperActivities(settings).all()
        + SecretActivities(settings).all(),
        activity_executor=executor,
        # No more activity tasks than threads to run them: a task accepted beyond that
        # would wait in the executor's queue, its timeouts running, instead of on the
        # server where another control worker could take it.
        max_concurrent_activities=CONTROL_THREADS,
    )


async def run_control_worker(settings: Settings) -> None:
    """Poll the control queue until SIGTERM or SIGINT."""
    client = await make_client(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=CONTROL_THREADS) as executor:
        worker = build_worker(client, settings, executor)
        async with worker:
            # This worker's settings reach the running pool (or start it).
            try:
                await configure_pool(client, settings, authoritative=True)
            except Exception as e:  # the pool can still be configured by a client later
                logging.warning("could not configure the pool: %s", e)
            reaper = None
            if settings.reap_interval_seconds > 0:
                reaper = asyncio.create_task(
                    reap_forever(
                        client,
                        settings.control_task_queue,
                        settings.reap_interval_seconds,
                        stop,
                        settings.pool_shards,
                    )
                )
            await stop.wait()
            if reaper is not None:
                await reaper
