"""OpenAPI pieces for the routes served at the edge rather than by FastAPI, so the document
(``/openapi.json``, ``/docs``) and the fuzzer see every route."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

ERRORS = (
    ("400", "Malformed request."),
    ("401", "Missing or wrong API key."),
    ("404", "Unknown model or version."),
    ("413", "Too many texts, or the body is too large."),
    ("503", "Busy (Retry-After) or shutting down."),
    ("504", "The deadline passed."),
)


class ErrorResponse(BaseModel):
    error: str


def ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def json_content(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(model)}}


def operation(
    tag: str, summary: str, request: str, response: str, description: str = ""
) -> dict[str, Any]:
    """A POST operation taking ``request`` and answering ``response`` (component names),
    with the project's error answers."""
    return {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "requestBody": {"required": True, "content": json_content(request)},
        "responses": {
            "200": {"description": "Success.", "content": json_content(response)},
            **{
                code: {"description": what, "content": json_content("ErrorResponse")}
                for code, what in ERRORS
            },
        },
    }


def extend(
    schema: dict[str, Any], paths: dict[str, Any], models: Iterable[type[BaseModel]]
) -> dict[str, Any]:
    """``schema`` (FastAPI's document) with ``paths`` and the JSON schemas of ``models``."""
    chosen: list[type[BaseModel]] = [ErrorResponse, *models]
    _, defs = models_json_schema(
        [(m, "validation") for m in chosen], ref_template="#/components/schemas/{model}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    schema["paths"] = {**paths, **schema.get("paths", {})}
    return schema
