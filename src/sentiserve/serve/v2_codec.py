"""The KServe v2 (Open Inference Protocol) codec, shared by the REST and gRPC transports:
tensor datatypes, raw tensor bytes, versions and server metadata for both, and the HTTP
forms (JSON and Triton's binary tensor extension).

Pure conversions between wire bytes and the data plane's types. The JSON documents are
pydantic models, so they are validated by pydantic's parser (which also refuses invalid
Unicode, such as a lone surrogate escape) and published in the OpenAPI document. A request
with the binary extension is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by each binary input's raw bytes, in input order; BYTES elements are each a
4-byte little-endian length and the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from sentiserve import __version__
from sentiserve.errors import InvalidInputError, ModelNotFoundError, validation_message
from sentiserve.serve.plane import InferRequest, InferResponse, Tensor, requested_truncation

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
DATATYPES = ("BYTES", *NUMPY_TYPES)

Parameters = dict[str, str | int | float | bool]

SERVER_NAME = "sentiserve"
EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]


def server_metadata() -> dict[str, Any]:
    """The server metadata answer (REST ``GET /v2``, gRPC ``ServerMetadata``)."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


class RequestInput(BaseModel):
    """One input tensor: ``data`` in JSON, or ``parameters.binary_data_size`` bytes after
    the JSON header."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    shape: list[NonNegativeInt]
    datatype: str = Field(json_schema_extra={"enum": list(DATATYPES)})
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] | None = Field(default=None, description="Row-major, nested or flat.")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    """The Open Inference Protocol's inference request."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    model_name: str | None = Field(
        default=None,
        description="Sent by KServe's client; must name the model in the URL when given.",
    )
    model_version: str | None = Field(default=None, description="Likewise, the URL's version.")
    parameters: Parameters = Field(
        default_factory=dict,
        description="timeout (microseconds), binary_data_output (bool), truncate (bool) and "
        "truncation_direction (right, left or head_tail) for a long text.",
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] = Field(default_factory=list)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """The Open Inference Protocol's inference response."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


@dataclass(frozen=True)
class HttpRequest:
    """A parsed v2 HTTP request: the data plane's request, plus which outputs go back in
    binary (a wire choice, so it stays here)."""

    request: InferRequest
    binary_outputs: frozenset[str]
    binary_by_default: bool

    def wants_binary(self, output: str) -> bool:
        return output in self.binary_outputs or self.binary_by_default


def parse_request(
    body: bytes, header_length: int | None, model: str, version: int | None
) -> HttpRequest:
    """Parse a v2 infer request body (JSON, or JSON header + binary tensor data)."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInputError(f"{HEADER_LENGTH} {header_length} does not fit the body")
        header, binary = body[:header_length], body[header_length:]
    else:
        header, binary = body, b""
    try:
        doc = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid inference request: {validation_message(exc)}") from exc
    if doc.model_name is not None and doc.model_name != model:
        raise InvalidInputError(f"model_name {doc.model_name!r} is not the URL's {model!r}")
    if doc.model_version and parse_version(doc.model_version) != version and version is not None:
        raise InvalidInputError(f"model_version {doc.model_version!r} is not the URL's {version}")
    tensors = []
    offset = 0
    for spec in doc.inputs:
        count = math.prod(spec.shape)
        size = spec.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInputError(
                    f"input {spec.name}: binary_data_size {size} overruns the body"
                )
            data = from_binary(binary[offset : offset + size], spec.datatype, count, spec.name)
            offset += size
        else:
            if spec.data is None:
                raise InvalidInputError(f"input {spec.name}: no 'data' and no binary_data_size")
            data = _from_json(spec.data, spec.datatype, count, spec.name)
        tensors.append(Tensor(spec.name, spec.datatype, list(spec.shape), data))
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data belong to no input")
    request = InferRequest(
        model=model,
        version=version,
        inputs=tensors,
        outputs=[o.name for o in doc.outputs],
        id=doc.id,
        timeout_s=_timeout(doc.parameters),
        truncation=requested_truncation(
            doc.parameters.get("truncate"), doc.parameters.get("truncation_direction")
        ),
    )
    binary_outputs = frozenset(o.name for o in doc.outputs if o.parameters.get("binary_data"))
    default = bool(doc.parameters.get("binary_data_output", False))
    return HttpRequest(request, binary_outputs, default)


def _timeout(parameters: Parameters) -> float | None:
    """Triton's per-request ``timeout`` parameter (microseconds), in seconds."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise InvalidInputError("parameter 'timeout' must be a number of microseconds")
    return float(timeout) / 1e6


def decode_bytes_elements(raw: bytes, name: str) -> list[bytes]:
    """Split a binary BYTES tensor into its elements."""
    out = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInputError(f"input {name}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInputError(f"input {name}: BYTES element overruns the tensor data")
        out.append(raw[offset : offset + length])
        offset += length
    return out


def encode_bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def from_binary(raw: bytes, datatype: str, count: int, name: str) -> npt.NDArray[Any] | list[bytes]:
    """Decode one binary tensor (REST's binary extension, gRPC's raw_input_contents)."""
    if datatype == "BYTES":
        items = decode_bytes_elements(raw, name)
        if len(items) != count:
            raise InvalidInputError(
                f"input {name}: shape says {count} elements, data has {len(items)}"
            )
        return items
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(f"input {name}: unknown datatype {datatype}")
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise InvalidInputError(
            f"input {name}: shape needs {count * itemsize} bytes of {datatype}, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).copy()


def _flatten(data: Any, out: list[Any]) -> list[Any]:
    if isinstance(data, list):
        for item in data:
            _flatten(item, out)
    else:
        out.append(data)
    return out


def _from_json(data: Any, datatype: str, count: int, name: str) -> npt.NDArray[Any] | list[bytes]:
    flat = _flatten(data, [])
    if len(flat) != count:
        raise InvalidInputError(f"input {name}: shape says {count} elements, data has {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInputError(f"input {name}: BYTES data must be strings")
        return [v.encode("utf-8") for v in flat]
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(f"input {name}: unknown datatype {datatype}")
    if not all(isinstance(v, int | float | bool) for v in flat):
        raise InvalidInputError(f"input {name}: {datatype} data must be numbers")
    try:
        return np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"input {name}: {exc}") from exc


def parse_version(text: str | None) -> int | None:
    """A model version from a URL or message: empty means the serving version."""
    if not text:
        return None
    # ASCII digits only: str.isdigit() also accepts "³", which int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ModelNotFoundError(f"no version {text[:40]!r}")
    return int(text)


def tensor_bytes(tensor: Tensor) -> bytes:
    """A tensor's raw wire bytes (BYTES elements length-prefixed)."""
    if isinstance(tensor.data, list):
        return encode_bytes_elements(tensor.data)
    return np.ascontiguousarray(tensor.data).tobytes()


def encode_response(parsed: HttpRequest, response: InferResponse) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when any output is binary."""
    specs = []
    blobs = []
    for t in response.outputs:
        spec: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if parsed.wants_binary(t.name):
            blob = tensor_bytes(t)
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif isinstance(t.data, list):
            spec["data"] = [b.decode("utf-8", "replace") for b in t.data]
        else:
            spec["data"] = t.data.reshape(-1).tolist()
        specs.append(spec)
    doc: dict[str, Any] = {
        "model_name": response.model,
        "model_version": str(response.version),
        "outputs": specs,
    }
    if response.id is not None:
        doc["id"] = response.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
