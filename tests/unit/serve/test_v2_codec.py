"""The KServe v2 codec: table-driven cases for every datatype and error, and properties
(hypothesis) for arbitrary bytes: a malformed request is an InvalidInputError, never a
crash."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentiserve.errors import InvalidInputError, ModelNotFoundError
from sentiserve.serve import v2_codec as codec
from sentiserve.serve.plane import InferRequest, InferResponse, Tensor

EXAMPLES = int(os.environ.get("SENTISERVE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("datatype", sorted(codec.NUMPY_TYPES))
def test_every_numeric_datatype_round_trips_json_and_binary(datatype: str) -> None:
    dtype = np.dtype(codec.NUMPY_TYPES[datatype])
    values = np.arange(6).astype(dtype).reshape(2, 3)
    from_json = codec._from_json(values.tolist(), datatype, 6, "x")
    from_raw = codec.from_binary(values.tobytes(), datatype, 6, "x")
    assert isinstance(from_json, np.ndarray)
    assert isinstance(from_raw, np.ndarray)
    assert from_json.dtype == from_raw.dtype == dtype
    assert np.array_equal(from_json, values.reshape(-1))
    assert np.array_equal(from_raw, values.reshape(-1))


@pytest.mark.parametrize(
    ("raw", "datatype", "count", "message"),
    [
        (b"\x00" * 7, "INT64", 1, "needs 8 bytes of INT64, got 7"),
        (b"\x00" * 8, "FP99", 1, "unknown datatype FP99"),
        (b"\x01\x00", "BYTES", 1, "truncated BYTES element length"),
        (struct.pack("<I", 5) + b"abc", "BYTES", 1, "overruns the tensor data"),
        (struct.pack("<I", 1) + b"a", "BYTES", 2, "shape says 2 elements, data has 1"),
    ],
)
def test_binary_errors(raw: bytes, datatype: str, count: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        codec.from_binary(raw, datatype, count, "x")


@pytest.mark.parametrize(
    ("data", "datatype", "count", "message"),
    [
        ([1, 2], "INT32", 3, "shape says 3 elements, data has 2"),
        (["a"], "INT32", 1, "INT32 data must be numbers"),
        ([1], "BYTES", 1, "BYTES data must be strings"),
        ([300], "UINT8", 1, "input x"),
        ([1], "NOPE", 1, "unknown datatype NOPE"),
    ],
)
def test_json_errors(data: list[object], datatype: str, count: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        codec._from_json(data, datatype, count, "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("7", 7), ("0012", 12)],
)
def test_versions(text: str | None, expected: int | None) -> None:
    assert codec.parse_version(text) == expected


@pytest.mark.parametrize("text", ["³", "1.5", "-1", "x", "9" * 19, "١"])
def test_bad_versions_are_not_found(text: str) -> None:
    with pytest.raises(ModelNotFoundError):
        codec.parse_version(text)


def test_response_is_json_or_json_header_plus_binary() -> None:
    labels = [b"positive", b"negative"]
    probs = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    response = InferResponse(
        "sentiment",
        3,
        [Tensor("LABEL", "BYTES", [2, 1], labels), Tensor("PROBABILITIES", "FP32", [2, 2], probs)],
        id="req-1",
    )
    plain = codec.HttpRequest(InferRequest("sentiment", None, []), frozenset(), False)
    body, header = codec.encode_response(plain, response)
    assert header is None
    doc = json.loads(body)
    assert doc["model_version"] == "3"
    assert doc["id"] == "req-1"
    assert doc["outputs"][0]["data"] == ["positive", "negative"]
    binary = codec.HttpRequest(plain.request, frozenset({"PROBABILITIES"}), False)
    body, header = codec.encode_response(binary, response)
    assert header is not None
    head = json.loads(body[:header])
    assert head["outputs"][1]["parameters"]["binary_data_size"] == 16
    assert np.array_equal(np.frombuffer(body[header:], dtype=np.float32).reshape(2, 2), probs)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_bytes_elements_round_trip(items: list[bytes]) -> None:
    raw = codec.encode_bytes_elements(items)
    assert codec.decode_bytes_elements(raw, "x") == items
    assert codec.from_binary(raw, "BYTES", len(items), "x") == items


@FUZZ
@given(
    raw=st.binary(max_size=64),
    datatype=st.sampled_from([*codec.DATATYPES, "FP8", ""]),
    count=st.integers(0, 20),
)
def test_arbitrary_binary_tensors_decode_or_are_refused(
    raw: bytes, datatype: str, count: int
) -> None:
    try:
        data = codec.from_binary(raw, datatype, count, "x")
    except InvalidInputError:
        return
    assert len(data) == count


shapes = st.lists(st.integers(-2, 6), max_size=3)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)
inputs = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["TEXT", "input_ids", "", "x"]),
        "datatype": st.sampled_from([*codec.DATATYPES, "STRING", 5]),
        "shape": shapes,
    },
    optional={
        "data": json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "x"]), st.integers(-5, 40) | st.text(max_size=3)
        ),
    },
)


@FUZZ
@given(
    doc=st.fixed_dictionaries(
        {"inputs": st.lists(inputs, max_size=3)},
        optional={
            "id": st.text(max_size=4) | st.integers(),
            "parameters": st.dictionaries(
                st.sampled_from(["timeout", "binary_data_output"]), json_values
            ),
        },
    ),
    binary=st.binary(max_size=40),
    header=st.none() | st.integers(-3, 400),
)
def test_arbitrary_requests_parse_or_are_refused(
    doc: dict[str, object], binary: bytes, header: int | None
) -> None:
    head = json.dumps(doc).encode()
    body = head + binary if header is not None else head
    length = None if header is None else (len(head) if header % 3 == 0 else header)
    try:
        parsed = codec.parse_request(body, length, "sentiment", None)
    except InvalidInputError:
        return
    for tensor in parsed.request.inputs:
        assert len(tensor.data) == int(np.prod(tensor.shape))
