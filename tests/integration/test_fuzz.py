"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis):
no generated request may get a 5xx. `make fuzz` runs many more cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.serving import Running, bytes_tensor, start_server, stop

EXAMPLES = int(os.environ.get("SENTISERVE_FUZZ_EXAMPLES", "30"))


def test_no_generated_request_gets_a_server_error(tiny_build: Path, tmp_path: Path) -> None:
    running = start_server(tiny_build / "model_repository", "--model-control")
    try:
        cli = Path(sys.executable).with_name("schemathesis")
        proc = subprocess.run(
            [
                str(cli),
                "run",
                f"{running.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "7",
                "--workers",
                "1",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        summary = proc.stdout[-3000:]
        assert proc.returncode == 0, summary
        assert " passed" in summary
        assert "generated" in summary
    finally:
        stop(running)


# --- Property-based requests the OpenAPI document cannot describe: gRPC ModelInfer and the
# binary tensor extension, with random shapes, datatypes and bytes. No 5xx, no INTERNAL. ---

PROPERTY_EXAMPLES = int(os.environ.get("SENTISERVE_FUZZ_EXAMPLES", "60"))
SERVER_CODES = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}


@pytest.fixture(scope="module")
def fuzzed(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository", "--model-control")
    yield running
    stop(running)


def _elements(items: list[bytes]) -> bytes:
    return bytes_tensor(items)


tensor_specs = st.lists(
    st.tuples(
        st.sampled_from(["TEXT", "input_ids", "attention_mask", "token_type_ids", "junk"]),
        st.sampled_from(["BYTES", "INT64", "INT32", "FP32", "FP16", "BOOL", "UINT8", "NOPE"]),
        st.lists(st.integers(-1, 4), max_size=3),
        st.one_of(
            st.binary(max_size=48), st.lists(st.binary(max_size=12), max_size=4).map(_elements)
        ),
    ),
    min_size=0,
    max_size=3,
)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["sentiment", "sentiment_onnx", "nope", ""]),
    specs=tensor_specs,
    timeout=st.none() | st.integers(-10, 10**12),
)
def test_grpc_model_infer_with_random_tensors(
    fuzzed: Running, model: str, specs: list[tuple[str, str, list[int], bytes]], timeout: int | None
) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in specs:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(raw)
    if timeout is not None:
        request.parameters["timeout"].int64_param = timeout
    with grpc.insecure_channel(f"127.0.0.1:{fuzzed.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        future = stub.ModelInfer.future(request, timeout=30)
        code = future.code()
        assert code.name not in SERVER_CODES, future.details()


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["sentiment", "sentiment_onnx", "nope"]),
    specs=tensor_specs,
    header_delta=st.integers(-5, 5),
)
def test_binary_extension_with_random_tensors(
    fuzzed: Running, model: str, specs: list[tuple[str, str, list[int], bytes]], header_delta: int
) -> None:
    import httpx

    inputs = [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
        for n, d, s, raw in specs
    ]
    header = json.dumps({"inputs": inputs}).encode()
    body = header + b"".join(raw for *_, raw in specs)
    length = max(len(header) + header_delta, 0) if header_delta % 2 else len(header)
    r = httpx.post(
        f"{fuzzed.url}/v2/models/{model}/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(length)},
        timeout=30,
    )
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert list(r.json()) == ["error"]
