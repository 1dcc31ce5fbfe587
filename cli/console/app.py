"""The console's ASGI application: the pages (one HTML shell whose script reads the
JSON API), the JSON API, its OpenAPI document and the static assets.

    from conjure.cli.console.app import create_app
    app = create_app(settings)   # serve with uvicorn, or `conjure console`
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from temporalio.service import RPCError, RPCStatusCode

from conjure.cli.console import jsonapi, openapi
from conjure.cli.console.security import Guard
from conjure.cli.facade import AsyncConjure
from conjure.infra.config import Settings, get_settings
from conjure.infra.console_token import is_loopback
from conjure.infra.errors import ConjureError, UsageError
from conjure.infra.store import BadKey

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("conjure.console")

PAGES = [
    "/",
    "/runs/{run_id:int}",
    "/pipelines",
    "/pipelines/{pipeline_id:int}",
    "/hypers/{hyper_id:int}",
    "/machines",
    "/resources",
    "/resources/{path:path}",
]


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message}, status_code=status, headers={"Cache-Control": "no-store"}
    )


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, jsonapi.HTTPError)
    return _error(exc.status, exc.message)


async def on_conjure_error(request: Request, exc: Exception) -> Response:
    msg = str(exc)
    if isinstance(exc, (UsageError, BadKey)):
        return _error(400, msg)
    if "secrets" in msg:
        return _error(403, msg)
    if "does not exist" in msg or "has no run" in msg:
        return _error(404, msg)
    return _error(409, msg)  # e.g. the run is already Complete


async def on_rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RPCError)
    if exc.status == RPCStatusCode.NOT_FOUND:
        return _error(404, exc.message)
    if exc.status == RPCStatusCode.INVALID_ARGUMENT:
        return _error(400, exc.message)
    log.warning("Temporal call failed: %s", exc)
    return _error(503, f"Temporal answered: {exc.message}")


async def on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return _error(exc.status_code, exc.detail)
    return Response(exc.detail, status_code=exc.status_code, media_type="text/plain")


def create_app(
    settings: Settings | None = None,
    *,
    token: str | None = None,
    conjure: AsyncConjure | None = None,
) -> Starlette:
    """The console for these settings. token: what every request must carry (None: no
    login, which `conjure console` allows only on loopback)."""
    settings = settings or get_settings()
    api = conjure or AsyncConjure(settings, autostart=False)
    doc_cache: dict[str, Any] = {}

    async def openapi_json(request: Request) -> Response:
        if not doc_cache:
            from importlib.metadata import PackageNotFoundError, version

            try:
                v = version("conjure")
            except PackageNotFoundError:
                v = "0"
            doc_cache.update(openapi.document(v))
        return JSONResponse(doc_cache)

    routes: list[BaseRoute] = [
        Route(e.path, _no_store(e.handler), methods=[e.method], name=e.handler.__name__)
        for e in jsonapi.ENDPOINTS
    ]
    routes.append(Route("/api/openapi.json", openapi_json, methods=["GET"]))
    routes += [Route(p, page, methods=["GET"]) for p in PAGES]
    routes.append(Route("/favicon.svg", _favicon, methods=["GET"]))
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
    app = Starlette(
        routes=routes,
        exception_handlers={
            jsonapi.HTTPError: on_http_error,
            ConjureError: on_conjure_error,
            BadKey: on_conjure_error,
            RPCError: on_rpc_error,
            HTTPException: on_starlette_error,
        },
    )
    app.state.conjure = api
    app.state.run_ids = {}
    loopback_only = token is None and is_loopback(settings.console_bind)
    app.add_middleware(Guard, token=token, loopback_only=loopback_only)
    return app


def _no_store(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        resp: Response = await handler(request)
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    wrapped.__name__ = handler.__name__
    return wrapped


async def _favicon(request: Request) -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")
