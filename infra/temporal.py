"""One way to reach Temporal, used by the CLI, the API, the workers and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from conjure.infra.config import Settings


class ServerUnreachable(Exception):
    pass


async def make_client(settings: Settings, *, timeout: float = 10.0) -> Client:
    tls: bool | TLSConfig = False
    if settings.temporal_tls or settings.temporal_tls_cert or settings.temporal_api_key:
        tls = TLSConfig(
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes()
            if settings.temporal_tls_ca
            else None,
            client_cert=settings.temporal_tls_cert.read_bytes()
            if settings.temporal_tls_cert
            else None,
            client_private_key=settings.temporal_tls_key.read_bytes()
            if settings.temporal_tls_key
            else None,
        )
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
                tls=tls,
                api_key=settings.temporal_api_key,
            ),
            timeout,
        )
    except (RuntimeError, asyncio.TimeoutError, OSError) as e:
        raise ServerUnreachable(
            f"cannot reach the Temporal server at {settings.address}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


async def workflow_pollers(
    client: Client, task_queue: str, timeout: timedelta
) -> Sequence[PollerInfo]:
    """The workers the server has seen polling `task_queue` for workflow tasks (each with
    its last access time)."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timeout,
    )
    return resp.pollers
