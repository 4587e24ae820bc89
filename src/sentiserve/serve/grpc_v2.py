"""KServe v2 gRPC (``inference.GRPCInferenceService``), over the same data plane as REST.

The protocol buffers are the ones Triton's own client ships (``tritonclient.grpc``), so
the wire format is Triton's exactly. Errors map to gRPC codes in one table.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sentiserve import __version__
from sentiserve.errors import ModelNotFoundError, SentiserveError
from sentiserve.serve import v2
from sentiserve.serve.dataplane import DataPlane, InvalidInputError
from sentiserve.serve.rest_v2 import EXTENSIONS, SERVER_NAME, model_metadata

logger = logging.getLogger(__name__)

STATUS_TO_CODE = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""sentiserve error status -> gRPC status code; anything else is INTERNAL."""


CONTENTS_FIELD = {"INT64": "int64_contents", "INT32": "int_contents", "BYTES": "bytes_contents"}


def _tensor_from_request(request: Any, index: int) -> v2.Tensor:
    """One input of a ModelInferRequest, from raw_input_contents or typed contents."""
    spec = request.inputs[index]
    shape = [int(d) for d in spec.shape]
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input {spec.name}: shape must be non-negative")
    if spec.datatype not in CONTENTS_FIELD:
        raise InvalidInputError(f"input {spec.name}: unsupported datatype {spec.datatype}")
    count = int(np.prod(shape)) if shape else 1
    if index < len(request.raw_input_contents):
        raw = request.raw_input_contents[index]
        return v2.Tensor(spec.name, spec.datatype, shape,
                         v2.from_binary(raw, spec.datatype, count, spec.name))  # fmt: skip
    values = getattr(spec.contents, CONTENTS_FIELD[spec.datatype])
    data: Any = list(values) if spec.datatype == "BYTES" else np.asarray(values, dtype=np.int64)
    if len(data) != count:
        raise InvalidInputError(
            f"input {spec.name}: shape says {count} elements, data has {len(data)}"
        )
    return v2.Tensor(spec.name, spec.datatype, shape, data)


def _inputs(request: Any) -> dict[str, v2.Tensor]:
    return {t.name: t for t in (_tensor_from_request(request, i)
                                for i in range(len(request.inputs)))}  # fmt: skip


def _response(request: Any, model: str, version: int, outputs: list[v2.Tensor]) -> Any:
    """A ModelInferResponse with the requested outputs as raw_output_contents."""
    chosen = v2.select_outputs([o.name for o in request.outputs], outputs)
    spec = pb.ModelInferResponse.InferOutputTensor
    return pb.ModelInferResponse(
        model_name=model, model_version=str(version), id=request.id,
        outputs=[spec(name=t.name, datatype=t.datatype, shape=t.shape) for t in chosen],
        raw_output_contents=[v2.tensor_bytes(t) for t in chosen],
    )  # fmt: skip


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Converts protobuf messages to data-plane calls and back; nothing else."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def _guard(self, context: Any, call: Any, protected: bool = False) -> Any:
        try:
            if protected and self.plane.api_key.enabled:
                metadata = dict(context.invocation_metadata() or ())
                self.plane.api_key.check(metadata.get("authorization"))
            return await call()
        except SentiserveError as exc:
            code = STATUS_TO_CODE.get(HTTPStatus(exc.status), grpc.StatusCode.INTERNAL)
            await context.abort(code, exc.message)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            name = self.plane.raw_base(request.name) or request.name
            self.plane.model(name, v2.parse_version(request.version))
        except ModelNotFoundError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.plane.accepting)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            meta = model_metadata(self.plane, request.name, v2.parse_version(request.version))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )  # fmt: skip

        return await self._guard(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            number = v2.parse_version(request.model_version)
            timeout_s = self._timeout(request, context)
            if self.plane.raw_base(request.model_name) is not None:
                return await self._raw(request, number, timeout_s)
            self.plane.model(request.model_name, number)
            texts = v2.text_input(_inputs(request), request.model_name)
            result = await self.plane.classify(
                request.model_name, texts, version=number, timeout_s=timeout_s
            )
            outputs = v2.classification_outputs(result)
            return _response(request, result.model, result.version, outputs)

        return await self._guard(context, call, protected=True)

    @staticmethod
    def _timeout(request: Any, context: Any) -> float | None:
        timeout_s = None
        if "timeout" in request.parameters:  # Triton's per-request timeout, microseconds
            timeout_s = request.parameters["timeout"].int64_param / 1e6 or None
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = min(timeout_s or remaining, remaining)
        return timeout_s

    async def _raw(self, request: Any, number: int | None, timeout_s: float | None) -> Any:
        ids, mask = v2.raw_arrays(_inputs(request), request.model_name)
        model, logits = await self.plane.logits(
            request.model_name, ids, mask, version=number, timeout_s=timeout_s
        )
        return _response(request, request.model_name, model.version, [v2.logits_output(logits)])

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            from google.protobuf import json_format

            names = [request.name] if request.name else self.plane.registry.names()
            stats = [
                self.plane.statistics(self.plane.model(n, v2.parse_version(request.version)))
                for n in names
            ]
            return json_format.ParseDict(
                {"model_stats": stats}, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
            )

        return await self._guard(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        entry = pb.RepositoryIndexResponse.ModelIndex
        models = [
            entry(name=s.name, version="" if s.version is None else str(s.version),
                  state=s.state, reason=s.reason)
            for s in self.plane.registry.index()
        ]  # fmt: skip
        return pb.RepositoryIndexResponse(models=models)


async def start_grpc(plane: DataPlane, host: str, port: int) -> Any:
    """Start the gRPC server on the running event loop; returns it (call ``stop``)."""
    # Beyond max_in_flight concurrent calls gRPC answers RESOURCE_EXHAUSTED at once.
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", plane.limits.max_body_bytes)],
        maximum_concurrent_rpcs=plane.limits.max_in_flight,
    )  # fmt: skip
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError("the port is in use or not permitted")
    await server.start()
    return server
