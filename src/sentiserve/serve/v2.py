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

from sentiserve.errors import ModelNotFoundError
from sentiserve.serve.dataplane import Classification, InvalidInputError

HEADER_LENGTH = "Inference-Header-Content-Length"
TEXT_INPUT = "TEXT"
RAW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Inputs of the raw engine model; ``token_type_ids`` is accepted and must be all zeros."""
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
            data = from_binary(raw, datatype, count, name)
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


def parse_version(text: str | None) -> int | None:
    """A model version from a URL or message: empty means the serving version."""
    if not text:
        return None
    if not text.isdigit():
        raise ModelNotFoundError(f"no version {text!r}")
    return int(text)


def text_input(tensors: dict[str, Tensor], model: str) -> list[str]:
    """The texts of a text model's request: exactly one input, ``TEXT``."""
    if set(tensors) != {TEXT_INPUT}:
        raise InvalidInputError(
            f"model {model} takes one input {TEXT_INPUT} (BYTES); got "
            f"{', '.join(sorted(tensors)) or 'none'}"
        )
    return texts_of(tensors[TEXT_INPUT])


def raw_arrays(
    tensors: dict[str, Tensor], model: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """``input_ids`` and ``attention_mask`` as int64 matrices, checked against their shapes."""
    unknown = set(tensors) - set(RAW_INPUTS)
    if unknown or "input_ids" not in tensors:
        raise InvalidInputError(
            f"model {model} takes input_ids and optionally attention_mask and token_type_ids "
            f"(INT64 or INT32); got {', '.join(sorted(tensors))}"
        )
    arrays: dict[str, npt.NDArray[np.int64]] = {}
    for name, tensor in tensors.items():
        if tensor.datatype not in ("INT64", "INT32") or isinstance(tensor.data, list):
            raise InvalidInputError(f"input {name}: expected INT64 or INT32, got {tensor.datatype}")
        if len(tensor.shape) != 2:
            raise InvalidInputError(f"input {name}: expected shape [batch, sequence]")
        arrays[name] = np.asarray(tensor.data, dtype=np.int64).reshape(tensor.shape)
    types = arrays.get("token_type_ids")
    if types is not None and types.any():
        raise InvalidInputError("token_type_ids must be all zeros (single-text classifier)")
    return arrays["input_ids"], arrays.get("attention_mask")


def classification_outputs(result: Classification) -> list[Tensor]:
    """``LABEL`` and ``PROBABILITIES`` of a text model's answer."""
    shape = list(result.probabilities.shape)
    return [
        Tensor("LABEL", "BYTES", [shape[0]], [x.encode() for x in result.predicted()]),
        Tensor("PROBABILITIES", "FP32", shape,
               np.ascontiguousarray(result.probabilities, dtype=np.float32)),
    ]  # fmt: skip


def logits_output(logits: npt.NDArray[np.float32]) -> Tensor:
    """``logits`` of the raw engine model's answer."""
    return Tensor("logits", "FP32", list(logits.shape), np.ascontiguousarray(logits))


def select_outputs(requested: list[str], outputs: list[Tensor]) -> list[Tensor]:
    """The outputs a request asked for (all when it named none), in the model's order."""
    wanted = set(requested)
    unknown = wanted - {t.name for t in outputs}
    if unknown:
        raise InvalidInputError(f"unknown output(s) {', '.join(sorted(unknown))}")
    return [t for t in outputs if not wanted or t.name in wanted]


def tensor_bytes(tensor: Tensor) -> bytes:
    """A tensor's raw wire bytes (BYTES elements length-prefixed)."""
    if isinstance(tensor.data, list):
        return encode_bytes_elements(tensor.data)
    return np.ascontiguousarray(tensor.data).tobytes()


def wants_binary(request: InferRequest, output: str) -> bool:
    for spec in request.outputs:
        if spec.get("name") == output:
            return bool((spec.get("parameters") or {}).get("binary_data", False))
    return bool(request.parameters.get("binary_data_output", False))


def encode_response(
    model: str, version: int, request: InferRequest, outputs: list[Tensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when any output is binary."""
    chosen = select_outputs([str(o.get("name")) for o in request.outputs], outputs)
    specs = []
    blobs = []
    for t in chosen:
        spec: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if wants_binary(request, t.name):
            blob = tensor_bytes(t)
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
