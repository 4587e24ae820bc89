"""One request policy for every transport, in process: the real app (HTTP through an ASGI
transport) and the real gRPC server (on a loopback port, same event loop) over the tiny
model. The same unauthorised, over-limit and malformed requests over HTTP and gRPC get the
same decision, the same metric and an access-log line with a request id each."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb

from sentiserve.serve.app import Server
from sentiserve.serve.policy import Operation, TransportLimits
from tests.integration.serving import in_process

KEY = "policy-key-123"
AUTH = {"authorization": f"Bearer {KEY}"}


@dataclass
class Both:
    server: Server
    http: httpx.AsyncClient
    grpc: Any  # GRPCInferenceServiceStub on an aio channel

    def requests(self, transport: str, operation: str, status: int) -> float:
        metric = self.server.metrics.requests.labels(transport, operation, str(status))
        return float(metric._value.get())

    def overloads(self) -> float:
        return float(self.server.metrics.overload_rejected._value.get())


@pytest.fixture
async def both(tiny_build: Path) -> AsyncIterator[Both]:
    limits = TransportLimits(max_in_flight=1)
    async with in_process(tiny_build / "model_repository", api_key=KEY, transport=limits) as (
        server,
        http,
        stub,
    ):
        yield Both(server, http, stub)


def v2_body(name: str = "TEXT") -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": "BYTES", "shape": [1], "data": ["a good film"]}]}


def grpc_request(name: str = "TEXT") -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=name,
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[b"a good film"]),
    )
    return pb.ModelInferRequest(model_name="sentiment", inputs=[tensor])


async def grpc_infer(both: Both, request: Any, metadata: dict[str, str]) -> tuple[Any, Any]:
    """The status code and the trailing metadata of one ModelInfer call."""
    call = both.grpc.ModelInfer(request, metadata=tuple(metadata.items()))
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return await call.code(), dict(await call.trailing_metadata() or ())


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "sentiserve.access"]


# Each case: the HTTP request (headers, body), the gRPC request (metadata, message), and the
# one decision both must get: HTTP status, gRPC code.
CASES = {
    "unauthorised": ({}, v2_body(), {}, grpc_request(), 401, grpc.StatusCode.UNAUTHENTICATED),
    "wrong key": (
        {"authorization": "Bearer nope-nope-nope"},
        v2_body(),
        {"authorization": "Bearer nope-nope-nope"},
        grpc_request(),
        401,
        grpc.StatusCode.UNAUTHENTICATED,
    ),
    "malformed": (AUTH, v2_body("NOPE"), AUTH, grpc_request("NOPE"), 400, "INVALID_ARGUMENT"),
    "accepted": (AUTH, v2_body(), AUTH, grpc_request(), 200, grpc.StatusCode.OK),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_http_and_grpc_get_the_same_decision_metric_and_log(
    both: Both, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    headers, body, metadata, message, status, code = CASES[case]
    code = getattr(grpc.StatusCode, code) if isinstance(code, str) else code
    caplog.set_level(logging.INFO, logger="sentiserve.access")
    http_id, grpc_id = f"http-{case}", f"grpc-{case}"

    answer = await both.http.post(
        "/v2/models/sentiment/infer", json=body, headers={**headers, "x-request-id": http_id}
    )
    got_code, trailers = await grpc_infer(both, message, {**metadata, "x-request-id": grpc_id})

    assert answer.status_code == status, answer.text
    assert got_code == code
    assert answer.headers["x-request-id"] == http_id
    assert trailers["x-request-id"] == grpc_id
    if status == 401:
        assert answer.json() == {"error": "missing or invalid API key"}
    for transport in ("http", "grpc"):
        assert both.requests(transport, "infer", status) == 1, transport
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert lines[http_id]["status"] == lines[grpc_id]["status"] == status
    assert (lines[http_id]["transport"], lines[grpc_id]["transport"]) == ("http", "grpc")
    assert lines[http_id]["operation"] == lines[grpc_id]["operation"] == "infer"
    assert lines[grpc_id]["target"].endswith("/ModelInfer")
    assert both.overloads() == 0


async def test_one_admission_budget_for_http_and_grpc(
    both: Both, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sentiserve.access")
    policy = both.server.policy
    with policy.admitted(Operation.INFER):  # the one place max_in_flight=1 allows: taken
        answer = await both.http.post("/v2/models/sentiment/infer", json=v2_body(), headers=AUTH)
        rest = await both.http.post("/v1/sentiment", json={"text": "fine"}, headers=AUTH)
        got_code, trailers = await grpc_infer(both, grpc_request(), AUTH)
        # Health, metadata and statistics are never refused for load.
        assert (await both.http.get("/v2/models/sentiment")).status_code == 200
        assert (await both.grpc.ServerReady(pb.ServerReadyRequest())).ready
    assert (answer.status_code, rest.status_code) == (503, 503)
    assert answer.headers["retry-after"] == "1"
    assert got_code == grpc.StatusCode.UNAVAILABLE
    assert trailers["retry-after"] == "1"
    assert both.overloads() == 3, "every refusal counted, gRPC's too"
    assert both.requests("http", "infer", 503) == 2
    assert both.requests("grpc", "infer", 503) == 1
    refused = [line for line in access_lines(caplog) if line["status"] == 503]
    assert len(refused) == 3
    assert len({line["request_id"] for line in refused}) == 3
    # The place is free again: both transports serve.
    assert policy.in_flight == 0
    ok = await both.http.post("/v2/models/sentiment/infer", json=v2_body(), headers=AUTH)
    assert ok.status_code == 200
    assert (await grpc_infer(both, grpc_request(), AUTH))[0] == grpc.StatusCode.OK


async def test_open_operations_need_no_key_and_draining_is_not_ready(both: Both) -> None:
    assert (await both.http.get("/v2/models/sentiment")).status_code == 200
    meta = await both.grpc.ModelMetadata(pb.ModelMetadataRequest(name="sentiment"))
    assert meta.name == "sentiment"
    stats = await both.grpc.ModelStatistics(pb.ModelStatisticsRequest(name="sentiment"))
    assert stats.model_stats[0].name == "sentiment"
    # Model control is protected on both transports.
    index = await both.http.post("/v2/repository/index")
    assert index.status_code == 401
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await both.grpc.RepositoryIndex(pb.RepositoryIndexRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    both.server.stop_accepting()
    assert (await both.http.get("/v2/health/ready")).status_code == 503
    assert (await both.http.get("/v2/models/sentiment/ready")).status_code == 503
    assert not (await both.grpc.ServerReady(pb.ServerReadyRequest())).ready
    assert not (await both.grpc.ModelReady(pb.ModelReadyRequest(name="sentiment"))).ready
