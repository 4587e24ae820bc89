"""The OpenAPI document of the inference routes served at the edge rather than by FastAPI:
generated from each route's path template and pydantic models, then merged into FastAPI's
document, so ``/openapi.json``, ``/docs`` and the fuzzer see every route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sentiserve.serve.edge import Route

ERRORS = (
    ("400", "Malformed request."),
    ("401", "Missing or wrong API key."),
    ("404", "Unknown model or version."),
    ("408", "The request body did not arrive in time."),
    ("413", "Too many texts, or the body is too large."),
    ("415", "A media type this route does not read."),
    ("503", "Busy (Retry-After) or shutting down."),
    ("504", "The deadline passed."),
)
"""The error answers every inference route may give, in the policy's format."""


class ErrorResponse(BaseModel):
    error: str


def _content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def operation(route: Route) -> dict[str, Any]:
    """The OpenAPI operation of ``route``: its body, its answer, the error answers, and a
    string parameter per path parameter."""
    return {
        "tags": [route.tag],
        "summary": route.summary,
        "description": route.description,
        "operationId": route.operation_id,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.parameters
        ],
        "requestBody": {"required": True, "content": _content(route.request_model)},
        "responses": {
            "200": {"description": "Success.", "content": _content(route.response_model)},
            **{
                code: {"description": what, "content": _content(route.error_model or ErrorResponse)}
                for code, what in ERRORS
            },
        },
    }


def extend(schema: dict[str, Any], routes: Iterable[Route]) -> dict[str, Any]:
    """``schema`` (FastAPI's document) with the operations of ``routes`` and the JSON
    schemas of their models."""
    routes = list(routes)
    models: dict[str, type[BaseModel]] = {ErrorResponse.__name__: ErrorResponse}
    for route in routes:
        for model in (route.request_model, route.response_model, route.error_model):
            if model is not None:
                models[model.__name__] = model
    _, defs = models_json_schema(
        [(models[name], "validation") for name in sorted(models)],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    paths = {route.path: {"post": operation(route)} for route in routes}
    schema["paths"] = {**paths, **schema.get("paths", {})}
    return schema
