"""KServe v2 gRPC (``inference.GRPCInferenceService``): wire conversion over the data plane.

The protocol buffers are the ones Triton's own client ships (``tritonclient.grpc``), so
the wire format is Triton's exactly. Errors become status codes through
``errors.ERROR_TABLE``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sentiserve.errors import InvalidInputError, SentiserveError, grpc_code
from sentiserve.serve import v2
from sentiserve.serve.plane import DataPlane, InferRequest, InferResponse, Tensor
from sentiserve.serve.rest_v2 import server_metadata

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
    if spec.datatype not in v2.DATATYPES:
        raise InvalidInputError(f"input {spec.name}: unknown datatype {spec.datatype}")
    count = int(np.prod(shape)) if shape else 1
    if request.raw_input_contents:
        if index >= len(request.raw_input_contents):
            raise InvalidInputError(f"input {spec.name}: no raw contents")
        raw = request.raw_input_contents[index]
        return Tensor(
            spec.name, spec.datatype, shape, v2.from_binary(raw, spec.datatype, count, spec.name)
        )
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidInputError(f"input {spec.name}: {spec.datatype} must be sent raw")
    values = getattr(spec.contents, field)
    data: Any
    if spec.datatype == "BYTES":
        data = list(values)
    else:
        data = np.asarray(values, dtype=v2.NUMPY_TYPES[spec.datatype])
    if len(data) != count:
        raise InvalidInputError(
            f"input {spec.name}: shape says {count} elements, data has {len(data)}"
        )
    return Tensor(spec.name, spec.datatype, shape, data)


def infer_request(message: Any, deadline_s: float | None) -> InferRequest:
    timeout_s = None
    if "timeout" in message.parameters:  # Triton's per-request timeout, microseconds
        timeout_s = message.parameters["timeout"].int64_param / 1e6
    return InferRequest(
        model=message.model_name,
        version=v2.parse_version(message.model_version),
        inputs=[_tensor(message, i) for i in range(len(message.inputs))],
        outputs=[o.name for o in message.outputs],
        id=message.id or None,
        timeout_s=timeout_s,
        transport_deadline_s=deadline_s,
    )


def infer_response(response: InferResponse) -> Any:
    """A ModelInferResponse with every output as raw_output_contents."""
    spec = pb.ModelInferResponse.InferOutputTensor
    return pb.ModelInferResponse(
        model_name=response.model,
        model_version=str(response.version),
        id=response.id or "",
        outputs=[spec(name=t.name, datatype=t.datatype, shape=t.shape) for t in response.outputs],
        raw_output_contents=[v2.tensor_bytes(t) for t in response.outputs],
    )


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Converts protobuf messages to data-plane calls and back; nothing else."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def _call(
        self, context: Any, call: Callable[[], Awaitable[Any]], protected: bool = False
    ) -> Any:
        try:
            if protected and self.plane.api_key.enabled:
                metadata = dict(context.invocation_metadata() or ())
                self.plane.api_key.check(metadata.get("authorization"))
            return await call()
        except SentiserveError as exc:
            await context.abort(getattr(grpc.StatusCode, grpc_code(exc)), exc.message)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=await self.plane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=await self.plane.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            ready = await self.plane.model_ready(request.name, v2.parse_version(request.version))
            return pb.ModelReadyResponse(ready=ready)

        return await self._call(context, call)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(**server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            meta = await self.plane.metadata(request.name, v2.parse_version(request.version))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta.name,
                versions=meta.versions,
                platform=meta.platform,
                inputs=[
                    tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs
                ],
                outputs=[
                    tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs
                ],
            )

        return await self._call(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            message = infer_request(request, context.time_remaining())
            return infer_response(await self.plane.infer(message))

        return await self._call(context, call, protected=True)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            version = v2.parse_version(request.version)
            stats = await self.plane.statistics(request.name or None, version)
            return json_format.ParseDict(
                {"model_stats": stats}, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
            )

        return await self._call(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
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

        return await self._call(context, call, protected=True)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            await self.plane.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._call(context, call, protected=True)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def call() -> Any:
            await self.plane.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._call(context, call, protected=True)


async def start_grpc(
    plane: DataPlane, host: str, port: int, *, tls: tuple[bytes, bytes] | None = None
) -> Any:
    """Start the gRPC server on the running event loop; returns it (call ``stop``).

    Args:
        tls: PEM certificate chain and private key: serve gRPC over TLS.
    """
    # Beyond max_in_flight concurrent calls gRPC answers RESOURCE_EXHAUSTED at once.
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", plane.limits.max_body_bytes)],
        maximum_concurrent_rpcs=plane.limits.max_in_flight,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane), server)
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError("the port is in use or not permitted")
    await server.start()
    return server
