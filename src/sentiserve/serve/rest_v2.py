"""KServe v2 / Open Inference Protocol over REST, with Triton's binary tensor extension.

Wire conversion only: every operation is the data plane's. Inference is served at the edge
(:mod:`sentiserve.serve.edge`); the other operations are FastAPI routes. Health answers
carry the protocol's JSON bodies (``{"live": true}``, ``{"ready": true}``, ``{"name": ...,
"ready": ...}``) with 200 or 503, so status-only clients (tritonclient) and body-reading
ones (the KServe client) both work.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sentiserve.errors import InvalidInputError
from sentiserve.serve import v2_codec as codec
from sentiserve.serve.edge import Call, Reply, Route, check_content_type, token_headers
from sentiserve.serve.plane import DataPlane
from sentiserve.serve.policy import Policy
from sentiserve.triton.model_config import to_json

INFER_PATHS = {
    "infer": "/v2/models/{model}/infer",
    "infer_version": "/v2/models/{model}/versions/{version}/infer",
}
"""The inference routes, by OpenAPI operation id."""


def infer_routes(plane: DataPlane) -> list[Route]:
    """``POST /v2/models/<model>[/versions/<version>]/infer``."""

    async def infer(call: Call) -> Reply:
        name = call.path_params["model"]
        version = codec.parse_version(call.path_params.get("version"))
        check_content_type(call, "application/json", "application/octet-stream")
        header = call.headers.get(codec.HEADER_LENGTH.lower().encode())
        if header is not None and not header.isdigit():
            raise InvalidInputError(f"{codec.HEADER_LENGTH} must be an integer")
        try:
            parsed = codec.parse_request(
                call.body, int(header) if header is not None else None, name, version
            )
        except InvalidInputError:
            await plane.metadata(name, version)  # an unknown model is a 404, whatever the body
            raise
        response = await plane.infer(parsed.request)
        call.state["model"] = f"{response.model}:{response.version}"
        body, header_length = codec.encode_response(parsed, response)
        counted = token_headers(response.tokens, response.kept)
        if header_length is None:
            return Reply(200, body, headers=counted)
        return Reply(
            200,
            body,
            b"application/octet-stream",
            [(codec.HEADER_LENGTH.lower().encode(), str(header_length).encode()), *counted],
        )

    return [
        Route(
            path,
            infer,
            operation_id=operation_id,
            summary="Inference (Open Inference Protocol)",
            description="JSON, or with Triton's binary tensor extension: the JSON header's "
            "length in Inference-Header-Content-Length, then the binary tensors.",
            request_model=codec.InferenceRequest,
            response_model=codec.InferenceResponse,
            tag="kserve-v2",
        )
        for operation_id, path in INFER_PATHS.items()
    ]


def _status(ok: bool) -> int:
    return 200 if ok else 503


def router(plane: DataPlane, policy: Policy) -> APIRouter:
    """Every v2 operation but inference (readiness is the plane's and the policy's: a
    draining server is not ready)."""
    api = APIRouter(tags=["kserve-v2"])

    @api.get("/v2")
    async def metadata_of_server() -> dict[str, Any]:
        return codec.server_metadata()

    @api.get("/v2/health/live")
    async def live() -> JSONResponse:
        ok = await plane.live()
        return JSONResponse({"live": ok}, status_code=_status(ok))

    @api.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = policy.ready(await plane.ready())
        return JSONResponse({"ready": ok}, status_code=_status(ok))

    @api.get("/v2/models/{name}")
    @api.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return asdict(await plane.metadata(name, codec.parse_version(version)))

    @api.get("/v2/models/{name}/config")
    @api.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str | None = None) -> dict[str, Any]:
        """The model's configuration as Triton reports it (its model configuration
        extension), for Triton's tools and ``get_model_config()``."""
        return to_json(await plane.model_config(name, codec.parse_version(version)))

    @api.get("/v2/models/{name}/ready")
    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        ok = policy.ready(await plane.model_ready(name, codec.parse_version(version)))
        return JSONResponse(
            {"name": name, "ready": ok}, status_code=200 if ok else 400 if policy.accepting else 503
        )

    @api.get("/v2/models/{name}/stats")
    @api.get("/v2/models/{name}/versions/{version}/stats")
    async def stats(name: str, version: str | None = None) -> JSONResponse:
        return JSONResponse(
            {"model_stats": await plane.statistics(name, codec.parse_version(version))}
        )

    @api.post("/v2/repository/index")
    async def repository_index() -> JSONResponse:
        statuses = await plane.index()
        return JSONResponse(
            [
                {
                    "name": s.name,
                    "version": "" if s.version is None else str(s.version),
                    "state": s.state,
                    "reason": s.reason,
                }
                for s in statuses
            ]
        )

    @api.post("/v2/repository/models/{name}/load")
    async def load(name: str) -> JSONResponse:
        await plane.load(name)
        return JSONResponse({})

    @api.post("/v2/repository/models/{name}/unload")
    async def unload(name: str) -> JSONResponse:
        await plane.unload(name)
        return JSONResponse({})

    return api
