"""KServe v2 (Open Inference Protocol) tensors: JSON and the binary tensor extension.

Pure conversions between wire bytes and numpy arrays, shared by REST and gRPC. A request
with the binary extension is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by each binary input's raw bytes, in input order; BYTES elements are each a
4-byte little-endian length and the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.serve.dataplane import InvalidInputError

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


@dataclass
class Tensor:
    """A named tensor; BYTES tensors hold a flat list of ``bytes``."""

    name: str
    datatype: str
    shape: list[int]
    data: npt.NDArray[Any] | list[bytes]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)


def _element_count(shape: list[int], name: str) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInputError(f"input {name}: shape must be a list of non-negative integers")
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


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


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a v2 infer request body (JSON, or JSON header + binary tensor data)."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInputError(f"{HEADER_LENGTH} {header_length} does not fit the body")
        header, binary = body[:header_length], body[header_length:]
    else:
        header, binary = body, b""
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError("request body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("request needs a non-empty 'inputs' list")
    tensors = []
    offset = 0
    for spec in inputs:
        if not isinstance(spec, dict):
            raise InvalidInputError("each input must be an object")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInputError("each input needs a string 'name' and 'datatype'")
        count = _element_count(shape, name)  # type: ignore[arg-type]
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInputError(f"input {name}: parameters must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInputError(f"input {name}: binary_data_size {size} overruns the body")
            raw = binary[offset : offset + size]
            offset += size
            data = _from_binary(raw, datatype, count, name)
        else:
            if "data" not in spec:
                raise InvalidInputError(f"input {name}: no 'data' and no binary_data_size")
            data = _from_json(spec["data"], datatype, count, name)
        tensors.append(Tensor(name, datatype, list(shape), data, params))  # type: ignore[arg-type]
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInputError("'outputs' must be a list of objects")
    req_id = doc.get("id")
    return InferRequest(tensors, str(req_id) if req_id is not None else None,
                        doc.get("parameters") or {}, outputs)  # fmt: skip


def _from_binary(
    raw: bytes, datatype: str, count: int, name: str
) -> npt.NDArray[Any] | list[bytes]:
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


def _from_json(data: Any, datatype: str, count: int, name: str) -> npt.NDArray[Any] | list[bytes]:
    flat = _flatten(data)
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


def texts_of(tensor: Tensor) -> list[str]:
    """Decode a BYTES tensor of UTF-8 texts."""
    if tensor.datatype != "BYTES" or not isinstance(tensor.data, list):
        raise InvalidInputError(
            f"input {tensor.name}: expected datatype BYTES, got {tensor.datatype}"
        )
    out = []
    for i, raw in enumerate(tensor.data):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"input {tensor.name}: element {i} is not valid UTF-8") from exc
    return out


def wants_binary(request: InferRequest, output: str) -> bool:
    for spec in request.outputs:
        if spec.get("name") == output:
            return bool((spec.get("parameters") or {}).get("binary_data", False))
    return bool(request.parameters.get("binary_data_output", False))


def encode_response(
    model: str, version: int, request: InferRequest, outputs: list[Tensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when any output is binary."""
    requested = {o.get("name") for o in request.outputs}
    chosen = [t for t in outputs if not requested or t.name in requested]
    unknown = requested - {t.name for t in outputs}
    if unknown:
        raise InvalidInputError(f"unknown output(s) {', '.join(sorted(map(str, unknown)))}")
    specs = []
    blobs = []
    for t in chosen:
        spec: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if wants_binary(request, t.name):
            blob = (encode_bytes_elements(t.data) if isinstance(t.data, list)
                    else np.ascontiguousarray(t.data).tobytes())  # fmt: skip
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif isinstance(t.data, list):
            spec["data"] = [b.decode("utf-8") for b in t.data]
        else:
            spec["data"] = t.data.reshape(-1).tolist()
        specs.append(spec)
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": specs}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
