"""KServe v2 / Open Inference Protocol over REST, with Triton's binary tensor extension."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sentiserve import __version__
from sentiserve.errors import ModelNotFoundError
from sentiserve.serve import v2
from sentiserve.serve.dataplane import DataPlane, InvalidInputError, PayloadTooLargeError

SERVER_NAME = "sentiserve"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]


def model_metadata(plane: DataPlane, name: str, version: int | None) -> dict[str, Any]:
    base = plane.raw_base(name)
    if base is not None:
        model = plane.model(base, version)
        labels = len(model.served.labels)
        return {
            "name": name,
            "versions": [str(model.version)],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in v2.RAW_INPUTS],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, labels]}],
        }
    model = plane.model(name, version)
    labels = len(model.served.labels)
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "sentiserve_onnxruntime",
        "inputs": [{"name": v2.TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
            {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, labels]},
        ],
    }


def _timeout(parameters: dict[str, Any]) -> float | None:
    """Triton's per-request ``timeout`` parameter (microseconds), in seconds."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise InvalidInputError("parameter 'timeout' must be a number of microseconds")
    return float(timeout) / 1e6


def _response(payload: bytes, header_length: int | None) -> Response:
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={v2.HEADER_LENGTH: str(header_length)},
    )


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
        return model_metadata(plane, name, v2.parse_version(version))

    @api.get("/v2/models/{name}/ready")
    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        try:
            plane.model(plane.raw_base(name) or name, v2.parse_version(version))
        except ModelNotFoundError:
            return Response(status_code=400 if plane.accepting else 503)
        return Response(status_code=200 if plane.accepting else 503)

    @api.post("/v2/models/{name}/infer")
    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        number = v2.parse_version(version)
        raw = plane.raw_base(name) is not None
        if not raw:
            plane.model(name, number)  # 404 before reading the body
        body = await read_body(request, plane.limits.max_body_bytes)
        header = request.headers.get(v2.HEADER_LENGTH.lower())
        if header is not None and not header.isdigit():
            raise InvalidInputError(f"{v2.HEADER_LENGTH} must be an integer")
        req = v2.parse_request(body, int(header) if header is not None else None)
        by_name = {t.name: t for t in req.inputs}
        timeout_s = _timeout(req.parameters)
        if raw:
            ids, mask = v2.raw_arrays(by_name, name)
            model, logits = await plane.logits(name, ids, mask, version=number,
                                               timeout_s=timeout_s)  # fmt: skip
            out = [v2.logits_output(logits)]
            return _response(*v2.encode_response(name, model.version, req, out))
        texts = v2.text_input(by_name, name)
        result = await plane.classify(name, texts, version=number, timeout_s=timeout_s)
        outputs = v2.classification_outputs(result)
        return _response(*v2.encode_response(result.model, result.version, req, outputs))

    @api.get("/v2/models/{name}/stats")
    @api.get("/v2/models/{name}/versions/{version}/stats")
    async def stats(name: str, version: str | None = None) -> JSONResponse:
        model = plane.model(name, v2.parse_version(version))
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
