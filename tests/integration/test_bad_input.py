"""Hostile and malformed input, one table, every protocol: the friendly API (v1 JSON), KServe
v2 JSON, v2 with the binary tensor extension, and gRPC. Every case gets a 4xx (or the gRPC
code the error table maps it to) with the project's one-line error, never a 5xx, and the
server keeps serving. (Gateway mode shares the same edge and validation: see test_triton.)"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.integration.serving import Running, bytes_tensor, start_server, stop

HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class Case:
    """One hostile input: texts (raw JSON strings for the JSON protocols, so invalid Unicode
    can be written; bytes for binary and gRPC), the model, and the status expected."""

    name: str
    json_texts: str
    raw_texts: list[bytes]
    status: int
    message: str = ""
    model: str = "sentiment"


CASES = [
    Case("lone surrogate escape", r'["\ud800 review"]', [b"\xed\xa0\x80 review"], 400),
    # JSON bodies: raw 0xFF 0xFE bytes in the string (written as surrogate escapes here).
    Case("invalid UTF-8", '["\udcff\udcfe broken"]', [b"\xff\xfe broken"], 400),
    Case(
        "NUL and control characters in a text",
        r'["good\u0000 film\u0007"]',
        [b"good\x00 film\x07"],
        200,
    ),
    Case("only NULs and controls", r'["\u0000\u0001\u001f"]', [b"\x00\x01\x1f"], 400, "empty"),
    Case("empty text", '[""]', [b""], 400, "empty"),
    Case("whitespace only", r'["  \n\t "]', [b"  \n\t "], 400, "empty"),
    Case("no texts", "[]", [], 400),
    Case("model name with path characters", '["fine"]', [b"fine"], 404, model="../../etc/passwd"),
    Case("too many texts", json.dumps(["x"] * 300), [b"x"] * 300, 413, "limit"),
]


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository")
    yield running
    stop(running)


def assert_project_error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert list(body) == ["error"], body
        assert "\n" not in body["error"]
        assert message in body["error"]


def post(
    server: Running, path: str, content: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        timeout=30,
        headers={"content-type": "application/json", **(headers or {})},
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_v1_json(server: Running, case: Case) -> None:
    body = f'{{"texts": {case.json_texts}, "model": {json.dumps(case.model)}}}'
    raw = body.encode("utf-8", "surrogateescape")
    assert_project_error(post(server, "/v1/sentiment", raw), case.status, case.message)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_v2_json(server: Running, case: Case) -> None:
    count = len(json.loads(case.json_texts))
    tensor = (
        f'{{"name": "TEXT", "datatype": "BYTES", "shape": [{count}, 1], "data": {case.json_texts}}}'
    )
    path = f"/v2/models/{quote(case.model, safe='')}/infer"
    r = post(server, path, f'{{"inputs": [{tensor}]}}'.encode("utf-8", "surrogateescape"))
    status = 404 if case.model != "sentiment" else case.status
    assert_project_error(r, status, case.message if status == case.status else "")


def binary_request(items: list[bytes]) -> tuple[bytes, dict[str, str]]:
    blob = bytes_tensor(items)
    spec = {
        "name": "TEXT",
        "datatype": "BYTES",
        "shape": [len(items), 1],
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [spec]}).encode()
    return header + blob, {
        "Inference-Header-Content-Length": str(len(header)),
        "content-type": "application/octet-stream",
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_v2_binary(server: Running, case: Case) -> None:
    body, headers = binary_request(case.raw_texts)
    path = f"/v2/models/{quote(case.model, safe='')}/infer"
    status = 404 if case.model != "sentiment" else case.status
    assert_project_error(
        post(server, path, body, headers), status, case.message if status == case.status else ""
    )


def tei_status(case: Case) -> int:
    """TEI's status for the case: 400 for nothing to classify, 422 for the rest of bad input."""
    if case.status == 400:
        return 400 if case.message == "empty" or case.json_texts == "[]" else 422
    return case.status


def tei_body(case: Case) -> bytes:
    """TEI's batch grammar, [[text], ...], written around the case's raw JSON strings."""
    items = json.loads(case.json_texts)
    if not items:
        return b'{"inputs": []}'
    inner = f"[{case.json_texts}]" if len(items) == 1 else json.dumps([[x] for x in items])
    return f'{{"inputs": {inner}}}'.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("case", [c for c in CASES if c.model == "sentiment"], ids=lambda c: c.name)
def test_tei(server: Running, case: Case) -> None:
    r = post(server, "/predict", tei_body(case))
    assert r.status_code == tei_status(case), r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "error_type"}
        assert case.message in r.json()["error"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hugging_face_inference(server: Running, case: Case) -> None:
    body = f'{{"inputs": {case.json_texts}, "parameters": {{}}}}'
    path = f"/models/{quote(case.model, safe='')}"
    r = post(server, path, body.encode("utf-8", "surrogateescape"))
    want = 404 if case.model != "sentiment" else tei_status(case)
    assert r.status_code == want, r.text
    if case.model != "sentiment":  # a name with "/" matches no route: the server's own 404
        assert "error" in r.json()
    elif r.status_code >= 400:
        assert set(r.json()) == {"error", "error_type"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vllm(server: Running, case: Case) -> None:
    body = f'{{"input": {case.json_texts}, "model": {json.dumps(case.model)}}}'
    r = post(server, "/v1/classify", body.encode("utf-8", "surrogateescape"))
    assert r.status_code == case.status, r.text
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == case.status
        assert case.message in error["message"]


@pytest.fixture(scope="module")
def stub(server: Running) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def grpc_request(model: str, items: list[bytes]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "TEXT", "BYTES"
    tensor.shape.extend((len(items), 1))
    request.raw_input_contents.append(bytes_tensor(items))
    return request


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_grpc(stub: pb_grpc.GRPCInferenceServiceStub, case: Case) -> None:
    request = grpc_request(case.model, case.raw_texts)
    if case.status == 200:
        assert stub.ModelInfer(request, timeout=30).outputs[0].name == "LABEL"
        return
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == HTTP_TO_GRPC[case.status]
    assert case.message in caught.value.details()


# --- cases that exist on one wire only ---


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"not json", "application/json", 400, "Invalid JSON"),
        (b'{"text": "x"', "application/json", 400, "Invalid JSON"),
        (b'{"text": 5}', "application/json", 400, "text: Input should be a valid string"),
        (b'{"texts": "abc"}', "application/json", 400, "texts: Input should be a valid array"),
        (b'{"texts": [1, 2]}', "application/json", 400, "valid string"),
        (b'{"text": "x", "extra": 1}', "application/json", 400, "Extra inputs"),
        (b'{"text": "x", "timeout_ms": -5}', "application/json", 400, "greater than 0"),
        (
            b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "application/json",
            400,
            "recursion limit",
        ),
        (b'{"text": "x"}', "text/plain", 415, "send application/json"),
        (b'{"text": "x"}', "application/x-www-form-urlencoded", 415, "Content-Type"),
        (b"[]", "application/json", 400, "Input should be an object"),
        (b'{"text": "x"}', "application/json; charset=utf-8", 200, ""),
        (b'{"text": "x", "timeout_ms": 1000000000000}', "application/json", 200, ""),
    ],
)
def test_v1_malformed_bodies(
    server: Running, body: bytes, content_type: str, status: int, message: str
) -> None:
    r = post(server, "/v1/sentiment", body, {"content-type": content_type})
    assert_project_error(r, status, message)


def test_huge_bodies_are_refused_before_they_are_read(server: Running) -> None:
    huge = b'{"text": "' + b"a" * (5 << 20) + b'"}'
    assert_project_error(post(server, "/v1/sentiment", huge), 413, "exceeds")
    r = post(server, "/v2/models/sentiment/infer", huge)
    assert_project_error(r, 413, "exceeds")


@pytest.mark.parametrize(
    ("doc", "headers", "message"),
    [
        (
            {
                "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "parameters": {"timeout": -1},
            },
            {},
            "positive",
        ),
        (
            {
                "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "extra": 1,
            },
            {},
            "Extra inputs",
        ),
        (
            {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [5]}]},
            {},
            "BYTES data must be strings",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "TEXT",
                        "datatype": "BYTES",
                        "shape": [2, 2],
                        "data": ["a", "b", "c", "d"],
                    }
                ]
            },
            {},
            "shape must be [n] or [n, 1]",
        ),
        (
            {
                "inputs": [
                    {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["b"]},
                ]
            },
            {},
            "given twice",
        ),
        (
            {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            {"Inference-Header-Content-Length": "99999"},
            "does not fit the body",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "TEXT",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 50},
                    }
                ]
            },
            {},
            "overruns",
        ),
        (
            {
                "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "outputs": [{"name": "NOPE"}],
            },
            {},
            "unknown output",
        ),
    ],
)
def test_v2_malformed_requests(
    server: Running, doc: object, headers: dict[str, str], message: str
) -> None:
    r = post(server, "/v2/models/sentiment/infer", json.dumps(doc).encode(), headers)
    assert_project_error(r, 400, message)


def test_v2_lying_bytes_element_length(server: Running) -> None:
    body, headers = binary_request([b"fine"])
    header_length = int(headers["Inference-Header-Content-Length"])
    lying = body[:header_length] + struct.pack("<I", 1000) + body[header_length + 4 :]
    r = post(server, "/v2/models/sentiment/infer", lying, headers)
    assert_project_error(r, 400, "overruns the tensor data")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/..%2F..%2Fetc/infer",
        "/v2/models/sentiment/versions/%C2%B3/infer",
        "/v2/models/sentiment/versions/99999999999999999999999/infer",
    ],
)
def test_v2_hostile_paths_are_404(server: Running, path: str) -> None:
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
    assert_project_error(post(server, path, json.dumps(body).encode()), 404, "")


def test_grpc_hostile_timeouts_and_shapes(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = grpc_request("sentiment", [b"fine"])
    request.parameters["timeout"].int64_param = -5
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A client deadline longer than the server's 60 s limit is capped, not refused.
    answer = stub.ModelInfer(grpc_request("sentiment", [b"fine"]), timeout=600)
    assert answer.outputs[0].name == "LABEL"
    bad = grpc_request("sentiment", [b"fine"])
    bad.inputs[0].shape[:] = [3, 1]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(bad, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape says 3 elements" in caught.value.details()


def test_the_server_still_serves_after_all_that(server: Running) -> None:
    r = post(server, "/v1/sentiment", b'{"text": "a good film"}')
    assert r.status_code == 200
