"""KServe v2 / Open Inference Protocol over REST, with Triton's binary tensor extension."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sentiserve import __version__
from sentiserve.errors import ModelNotFoundError
from sentiserve.serve import v2
from sentiserve.serve.dataplane import DataPlane, InvalidInputError, PayloadTooLargeError

SERVER_NAME = "sentiserve"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]
TEXT_INPUT = "TEXT"


def _version(version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not version.isdigit():
        raise ModelNotFoundError(f"no version {version!r}")
    return int(version)


def model_metadata(plane: DataPlane, name: str, version: int | None) -> dict[str, Any]:
    model = plane.model(name, version)
    labels = len(model.served.labels)
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "sentiserve_onnxruntime",
        "inputs": [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
            {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, labels]},
        ],
    }


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes exceeds {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    return bytes(body)


def router(plane: DataPlane) -> APIRouter:
    api = APIRouter(tags=["kserve-v2"])

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    @api.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @api.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if plane.ready() else 503)

    @api.get("/v2/models/{name}")
    @api.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return model_metadata(plane, name, _version(version))

    @api.get("/v2/models/{name}/ready")
    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        try:
            plane.model(name, _version(version))
        except ModelNotFoundError:
            return Response(status_code=400 if plane.accepting else 503)
        return Response(status_code=200 if plane.accepting else 503)

    @api.post("/v2/models/{name}/infer")
    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        number = _version(version)
        plane.model(name, number)  # 404 before reading the body
        body = await read_body(request, plane.limits.max_body_bytes)
        header = request.headers.get(v2.HEADER_LENGTH.lower())
        if header is not None and not header.isdigit():
            raise InvalidInputError(f"{v2.HEADER_LENGTH} must be an integer")
        req = v2.parse_request(body, int(header) if header is not None else None)
        by_name = {t.name: t for t in req.inputs}
        unknown = set(by_name) - {TEXT_INPUT}
        if unknown or TEXT_INPUT not in by_name:
            raise InvalidInputError(
                f"model {name} takes one input {TEXT_INPUT} (BYTES); got "
                f"{', '.join(sorted(by_name))}"
            )
        texts = v2.texts_of(by_name[TEXT_INPUT])
        timeout = req.parameters.get("timeout")
        timeout_s = None
        if timeout is not None:  # Triton's per-request timeout, in microseconds
            if not isinstance(timeout, int | float) or isinstance(timeout, bool):
                raise InvalidInputError("parameter 'timeout' must be a number of microseconds")
            timeout_s = timeout / 1e6
        result = await plane.classify(name, texts, version=number, timeout_s=timeout_s)
        shape = list(result.probabilities.shape)
        outputs = [
            v2.Tensor("LABEL", "BYTES", [shape[0]], [x.encode() for x in result.predicted()]),
            v2.Tensor("PROBABILITIES", "FP32", shape,
                      np.ascontiguousarray(result.probabilities, dtype=np.float32)),
        ]  # fmt: skip
        payload, header_length = v2.encode_response(result.model, result.version, req, outputs)
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={v2.HEADER_LENGTH: str(header_length)},
        )

    @api.get("/v2/models/{name}/stats")
    @api.get("/v2/models/{name}/versions/{version}/stats")
    async def stats(name: str, version: str | None = None) -> JSONResponse:
        model = plane.model(name, _version(version))
        return JSONResponse({"model_stats": [plane.statistics(model)]})

    @api.post("/v2/repository/index")
    async def repository_index() -> JSONResponse:
        return JSONResponse([
            {"name": s.name, "version": "" if s.version is None else str(s.version),
             "state": s.state, "reason": s.reason}
            for s in plane.registry.index()
        ])  # fmt: skip

    @api.post("/v2/repository/models/{name}/load")
    async def load(name: str) -> Response:
        plane.check_model_control()
        # Verifying checksums, opening the engine and warming it up block: off the loop.
        await asyncio.to_thread(plane.registry.load, name)
        return Response(status_code=200)

    @api.post("/v2/repository/models/{name}/unload")
    async def unload(name: str) -> Response:
        plane.check_model_control()
        await asyncio.to_thread(plane.registry.unload, name)
        return Response(status_code=200)

    return api
