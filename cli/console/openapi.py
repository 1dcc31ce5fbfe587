"""The OpenAPI document of the console's JSON API, made from its endpoint table and
the pydantic models of the answers (so the document cannot drift from the code)."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from conjure.cli.console.jsonapi import ENDPOINTS, Endpoint
from conjure.cli.console.models import ErrorOut

_CONVERTOR = re.compile(r"\{(\w+)(?::\w+)?\}")


def openapi_path(path: str) -> str:
    """Starlette's `/api/runs/{run_id:int}` as OpenAPI's `/api/runs/{run_id}`."""
    return _CONVERTOR.sub(r"{\1}", path)


def document(version: str) -> dict[str, Any]:
    models = {e.response for e in ENDPOINTS if e.response is not None} | {ErrorOut}
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "serialization") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        paths.setdefault(openapi_path(e.path), {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conjure console API",
            "version": version,
            "description": (
                "Runs, logs, metrics, outputs, pipelines and machines of a Conjure "
                "installation. Off loopback every request needs `Authorization: Bearer "
                "TOKEN`; POSTs from a browser must come from the console's own origin."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"token": []}],
    }


def _operation(e: Endpoint) -> dict[str, Any]:
    if e.response is not None:
        ok = {
            "description": "OK",
            "content": {
                e.media_type: {"schema": {"$ref": f"#/components/schemas/{e.response.__name__}"}}
            },
        }
    else:
        ok = {
            "description": "The file",
            "content": {e.media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    return {
        "summary": e.summary,
        "operationId": e.handler.__name__,
        "parameters": [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": {"type": p.kind},
            }
            for p in e.params
        ],
        "responses": {
            "200": ok,
            "400": {"description": "A malformed parameter", **error},
            "401": {"description": "The token is missing or wrong", **error},
            "404": {"description": "No such run, pipeline or resource", **error},
        },
    }
