"""KServe v2 gRPC (``inference.GRPCInferenceService``): wire conversion over the data plane.

The protocol buffers are the ones Triton's own client ships (``tritonclient.grpc``), so
the wire format is Triton's exactly. The request policy (request id, authorization, the
admission budget shared with HTTP, error rendering through ``errors.ERROR_TABLE``, the
access log) is applied by :class:`PolicyInterceptor`; the servicer only converts.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sentiserve.errors import InvalidInputError, SentiserveError
from sentiserve.serve import v2_codec as codec
from sentiserve.serve.plane import (
    DataPlane,
    InferRequest,
    InferResponse,
    Tensor,
    requested_truncation,
)
from sentiserve.serve.policy import Operation, Policy, TransportLimits, as_error, grpc_error

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Where each datatype's values sit in ``InferTensorContents`` (FP16 exists only raw)."""


def _tensor(request: Any, index: int) -> Tensor:
    """One input of a ModelInferRequest, from raw_input_contents or typed contents."""
    spec = request.inputs[index]
    shape = [int(d) for d in spec.shape]
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input {spec.name}: shape must be non-negative")
    if spec.datatype not in codec.DATATYPES:
        raise InvalidInputError(f"input {spec.name}: unknown datatype {spec.datatype}")
    count = int(np.prod(shape)) if shape else 1
    if request.raw_input_contents:
        if index >= len(request.raw_input_contents):
            raise InvalidInputError(f"input {spec.name}: no raw contents")
        raw = request.raw_input_contents[index]
        return Tensor(
            spec.name, spec.datatype, shape, codec.from_binary(raw, spec.datatype, count, spec.name)
        )
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidInputError(f"input {spec.name}: {spec.datatype} must be sent raw")
    values = getattr(spec.contents, field)
    data: Any
    if spec.datatype == "BYTES":
        data = list(values)
    else:
        data = np.asarray(values, dtype=codec.NUMPY_TYPES[spec.datatype])
    if len(data) != count:
        raise InvalidInputError(
            f"input {spec.name}: shape says {count} elements, data has {len(data)}"
        )
    return Tensor(spec.name, spec.datatype, shape, data)


def infer_request(message: Any, deadline_s: float | None) -> InferRequest:
    timeout_s = None
    if "timeout" in message.parameters:  # Triton's per-request timeout, microseconds
        timeout_s = message.parameters["timeout"].int64_param / 1e6
    truncate = direction = None
    if "truncate" in message.parameters:
        truncate = message.parameters["truncate"].bool_param
    if "truncation_direction" in message.parameters:
        direction = message.parameters["truncation_direction"].string_param
    return InferRequest(
        model=message.model_name,
        version=codec.parse_version(message.model_version),
        inputs=[_tensor(message, i) for i in range(len(message.inputs))],
        outputs=[o.name for o in message.outputs],
        id=message.id or None,
        timeout_s=timeout_s,
        transport_deadline_s=deadline_s,
        truncation=requested_truncation(truncate, direction),
    )


def infer_response(response: InferResponse) -> Any:
    """A ModelInferResponse with every output as raw_output_contents."""
    spec = pb.ModelInferResponse.InferOutputTensor
    return pb.ModelInferResponse(
        model_name=response.model,
        model_version=str(response.version),
        id=response.id or "",
        outputs=[spec(name=t.name, datatype=t.datatype, shape=t.shape) for t in response.outputs],
        raw_output_contents=[codec.tensor_bytes(t) for t in response.outputs],
    )


OPERATIONS = {
    "ServerLive": Operation.HEALTH,
    "ServerReady": Operation.HEALTH,
    "ModelReady": Operation.HEALTH,
    "ServerMetadata": Operation.METADATA,
    "ModelMetadata": Operation.METADATA,
    "ModelConfig": Operation.METADATA,
    "ModelInfer": Operation.INFER,
    "ModelStatistics": Operation.STATISTICS,
    "RepositoryIndex": Operation.REPOSITORY,
    "RepositoryModelLoad": Operation.REPOSITORY,
    "RepositoryModelUnload": Operation.REPOSITORY,
}
"""What each implemented method asks for (the others answer UNIMPLEMENTED untouched)."""


class PolicyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The request policy on gRPC: request id (``x-request-id`` metadata, echoed in the
    trailing metadata), authorization (``authorization`` metadata), admission, one error
    rendering, the access log."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        operation = OPERATIONS.get(details.method.rsplit("/", 1)[-1])
        if handler is None or operation is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        policy = self.policy
        metadata = {m[0]: m[1] for m in details.invocation_metadata or ()}
        method = details.method

        async def guarded(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            request_id = policy.request_id(metadata.get("x-request-id"))
            model = getattr(request, "model_name", "") or getattr(request, "name", "") or None
            error: SentiserveError | None = None
            carrier = {k: metadata[k] for k in ("traceparent", "tracestate") if k in metadata}
            with policy.traced("grpc", operation, method, carrier, request_id) as trace:
                try:
                    policy.authorize(operation, metadata.get("authorization"))
                    with policy.admitted(operation):
                        response = await inner(request, context)
                except Exception as exc:
                    error = as_error(exc)
                policy.finish(
                    transport="grpc",
                    operation=operation,
                    target=method,
                    request_id=request_id,
                    status=200 if error is None else int(error.status),
                    start=start,
                    model=model,
                    trace=trace,
                )
            ids: tuple[tuple[str, str], ...] = (("x-request-id", request_id),)
            if trace is not None:
                ids += (("traceresponse", trace.traceresponse),)
            if error is None:
                context.set_trailing_metadata(ids)
                return response
            code, message, trailers = grpc_error(error)
            context.set_trailing_metadata((*ids, *trailers))
            await context.abort(getattr(grpc.StatusCode, code), message)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Converts protobuf messages to data-plane calls and back; nothing else."""

    def __init__(self, plane: DataPlane, policy: Policy) -> None:
        self.plane = plane
        self.policy = policy

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=await self.plane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.policy.ready(await self.plane.ready()))

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        ready = await self.plane.model_ready(request.name, codec.parse_version(request.version))
        return pb.ModelReadyResponse(ready=self.policy.ready(ready))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**codec.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        meta = await self.plane.metadata(request.name, codec.parse_version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        version = codec.parse_version(request.version)
        return pb.ModelConfigResponse(config=await self.plane.model_config(request.name, version))

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        message = infer_request(request, context.time_remaining())
        return infer_response(await self.plane.infer(message))

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        version = codec.parse_version(request.version)
        stats = await self.plane.statistics(request.name or None, version)
        return json_format.ParseDict(
            {"model_stats": stats}, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        entry = pb.RepositoryIndexResponse.ModelIndex
        models = [
            entry(
                name=s.name,
                version="" if s.version is None else str(s.version),
                state=s.state,
                reason=s.reason,
            )
            for s in await self.plane.index()
        ]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.plane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def grpc_server(plane: DataPlane, policy: Policy) -> Any:
    """A gRPC server (not yet bound or started) serving ``plane`` under ``policy``. No
    ``maximum_concurrent_rpcs``: inference is bounded by the policy's budget, shared with
    HTTP, so refusals are counted and rendered as every other refusal."""
    limits: TransportLimits = policy.limits
    server = grpc.aio.server(
        interceptors=[PolicyInterceptor(policy)],
        options=[("grpc.max_receive_message_length", limits.max_body_bytes)],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane, policy), server)
    return server


async def start_grpc(
    plane: DataPlane,
    policy: Policy,
    host: str,
    port: int,
    *,
    tls: tuple[bytes, bytes] | None = None,
) -> Any:
    """Start the gRPC server on the running event loop; returns it (call ``stop``).

    Args:
        tls: PEM certificate chain and private key: serve gRPC over TLS.
    """
    server = grpc_server(plane, policy)
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError("the port is in use or not permitted")
    await server.start()
    return server
