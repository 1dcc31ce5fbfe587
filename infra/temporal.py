"""One way to reach Temporal, used by the CLI, the API, the workers and the tests."""

from __future__ import annotations

import asyncio

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
