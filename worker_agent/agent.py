"""The per-machine agent: runs the machine-local activities against local Docker.

Stopping the agent (SIGTERM, or a crash) never stops a run's container: the
execute activity is retried on the machine's queue and the next agent picks
the container up again, with its logs, where the last one left it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import docker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from conjure.activities.machine import MachineActivities
from conjure.infra.config import Settings
from conjure.infra.store import open_store
from conjure.infra.temporal import make_client
from conjure.workflows.keys import machine_task_queue


def workflow_signaller(
    client: Client, loop: asyncio.AbstractEventLoop
) -> Callable[[str, Callable[..., Any], object], bool]:
    """signal(workflow_id, signal method, arg) for the activities' threads; False when
    the workflow is gone (finished), an exception on a passing fault."""

    def signal(workflow_id: str, method: Callable[..., Any], arg: object) -> bool:
        fut = asyncio.run_coroutine_threadsafe(
            client.get_workflow_handle(workflow_id).signal(method, arg), loop
        )
        try:
            fut.result(timeout=30)
            return True
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return False
            raise

    return signal


def docker_client(settings: Settings) -> docker.DockerClient:
    if settings.docker_host:
        return docker.DockerClient(base_url=settings.docker_host)
    return docker.from_env()


async def run_agent(settings: Settings, machine_id: str) -> None:
    client = await make_client(settings, timeout=60)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    acts = MachineActivities(
        settings,
        machine_id,
        open_store(settings.store, settings),
        docker_client(settings),
        # Resolved: Docker resolves bind sources itself, and a home reached through a
        # symlink (a data disk mounted elsewhere) must name the same files for it.
        (settings.machines_dir / machine_id).resolve(),
        signal_workflow=workflow_signaller(client, loop),
    )
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = Worker(
            client,
            task_queue=machine_task_queue(machine_id),
            activities=acts.all(),
            activity_executor=executor,
            max_concurrent_activities=32,
            graceful_shutdown_timeout=timedelta(seconds=3),
        )
        async with worker:
            logging.info("agent %s polling %s", machine_id, machine_task_queue(machine_id))
            watch = asyncio.create_task(_exit_when_terminated(settings, machine_id, stop))
            await stop.wait()
            watch.cancel()


async def _exit_when_terminated(settings: Settings, machine_id: str, stop: asyncio.Event) -> None:
    """A local machine's record gone (or marked terminated) means the machine was
    terminated: its agent leaves too, so none outlives its machine."""
    record = settings.machines_dir / machine_id / "machine.json"
    if not record.exists():
        return  # not a local machine (a cloud machine's agent has no record here)
    while not stop.is_set():
        await asyncio.sleep(2)
        try:
            gone = '"state": "terminated"' in record.read_text()
        except FileNotFoundError:
            gone = True
        if gone:
            logging.info("machine %s was terminated: the agent stops", machine_id)
            stop.set()
