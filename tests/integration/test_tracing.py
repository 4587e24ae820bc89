"""OpenTelemetry tracing through the real server (built in process, real engines on the
tiny model) into a real OTLP receiver over both of OTLP's transports: a request's
``traceparent`` is continued over HTTP and gRPC, its spans (admission, tokenize, queue,
inference, response) are the server span's children and fit inside it, the answer names
the trace; sampling follows the caller; with tracing off no header is added."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentiserve.serve.tracing import TracingConfig
from tests.integration.otlp import Receiver, Span
from tests.integration.serving import in_process
from tests.integration.test_compat import grpc_infer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
CHILDREN = {"admission", "tokenize", "queue", "inference", "response"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    yield sink
    sink.stop()


def tree(spans: list[Span], root_name: str, parent: str) -> tuple[Span, dict[str, Span]]:
    (root,) = [s for s in spans if s.name == root_name]
    assert root.parent_id == parent
    children = {s.name: s for s in spans if s.parent_id == root.span_id}
    for child in children.values():
        assert child.inside(root), f"{child.name} is outside {root.name}"
        assert child.trace_id == root.trace_id
    return root, children


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_a_traceparent_is_continued_over_http_and_grpc(
    tiny_build: Path, receiver: Receiver, protocol: str
) -> None:
    url = receiver.grpc_url if protocol == "grpc" else f"http://127.0.0.1:{receiver.http_port}"
    config = TracingConfig(url, protocol, service_name="sentiserve-test")
    async with in_process(tiny_build / "model_repository", tracing=config) as (_, http, stub):
        answer = await http.post(
            "/v1/sentiment",
            json={"texts": ["a wonderful film", "dull"]},
            headers={"traceparent": f"00-{TRACE}-{PARENT}-01", "x-request-id": "traced-1"},
        )
        assert answer.status_code == 200
        assert answer.headers["traceresponse"].startswith(f"00-{TRACE}-")
        grpc_trace = "0af7651916cd43dd8448eb211c80319c"
        call = stub.ModelInfer(
            grpc_infer("fine"), metadata=(("traceparent", f"00-{grpc_trace}-b7ad6b7169203331-01"),)
        )
        await call
        trailers = dict(await call.trailing_metadata())
        assert trailers["traceresponse"].startswith(f"00-{grpc_trace}-")
        # Metadata and health are not inference: no span, no header.
        meta = await http.get(
            "/v2/models/sentiment", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}
        )
        assert "traceresponse" not in meta.headers
    # Closing the server exported what was queued.
    spans = receiver.trace(TRACE)
    assert {s.service for s in spans} == {"sentiserve-test"}
    root, children = tree(spans, "POST /v1/sentiment", PARENT)
    assert answer.headers["traceresponse"] == f"00-{TRACE}-{root.span_id}-01"
    assert set(children) >= CHILDREN, sorted(children)
    assert root.attributes["sentiserve.request_id"] == "traced-1"
    assert root.attributes["http.response.status_code"] == 200
    assert children["tokenize"].attributes["sentiserve.texts"] == 2
    assert children["tokenize"].attributes["sentiserve.tokens"] > 2
    assert children["inference"].attributes["sentiserve.batch_size"] >= 1
    assert children["inference"].attributes["sentiserve.batch_tokens"] >= 2
    assert children["queue"].end_ns <= children["inference"].start_ns + 1000
    assert children["tokenize"].end_ns <= children["queue"].start_ns + 1000
    grpc_spans = receiver.trace(grpc_trace)
    _, grpc_children = tree(
        grpc_spans, "/inference.GRPCInferenceService/ModelInfer", "b7ad6b7169203331"
    )
    assert {"admission", "tokenize", "queue", "inference"} <= set(grpc_children)


async def test_sampling_follows_the_caller_and_off_adds_nothing(
    tiny_build: Path, receiver: Receiver
) -> None:
    config = TracingConfig(receiver.grpc_url, sample=0.0)
    repo = tiny_build / "model_repository"
    async with in_process(repo, tracing=config) as (_, http, _stub):
        untraced = await http.post("/v1/sentiment", json={"text": "x"})
        sampled = f"00-{TRACE}-{PARENT}-01"
        traced = await http.post(
            "/v1/sentiment", json={"text": "x"}, headers={"traceparent": sampled}
        )
        declined = "00-11111111111111111111111111111111-2222222222222222-00"
        skipped = await http.post(
            "/v1/sentiment", json={"text": "x"}, headers={"traceparent": declined}
        )
    assert "traceresponse" not in untraced.headers, "ratio 0: a new trace is not recorded"
    assert "traceresponse" in traced.headers, "the caller sampled it"
    assert "traceresponse" not in skipped.headers, "the caller did not"
    assert {s.trace_id for s in receiver.spans} == {TRACE}
    async with in_process(repo) as (_, http, _stub):
        off = await http.post("/v1/sentiment", json={"text": "x"}, headers={"traceparent": sampled})
    assert "traceresponse" not in off.headers


def test_the_standard_variables_turn_tracing_on() -> None:
    assert TracingConfig.resolve(None, environ={}) is None
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "reviews",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    assert TracingConfig.resolve(None, environ=env) == TracingConfig(
        "http://collector:4318", "http/protobuf", "reviews", 0.25
    )
    # Settings win over the variables.
    chosen = TracingConfig.resolve("http://other:4317", "api", 1.0, environ=env)
    assert chosen == TracingConfig("http://other:4317", "http/protobuf", "api", 1.0)
    from sentiserve.errors import ConfigError

    with pytest.raises(ConfigError, match="protocol"):
        TracingConfig("http://c:4317", "thrift")
    with pytest.raises(ConfigError, match="http"):
        TracingConfig("collector:4317")
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None


async def test_a_dead_receiver_fails_no_request_and_every_lost_span_is_counted(
    tiny_build: Path,
) -> None:
    from tests.integration.serving import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = TracingConfig(dead, "http/protobuf")
    async with in_process(tiny_build / "model_repository", tracing=config) as (server, http, _):
        codes = [
            (await http.post("/v1/sentiment", json={"text": f"review {i}"})).status_code
            for i in range(20)
        ]
        # A malformed traceparent starts a new trace rather than failing the request.
        bad = await http.post(
            "/v1/sentiment", json={"text": "x"}, headers={"traceparent": "00-xyz-01"}
        )
    assert codes == [200] * 20
    assert bad.status_code == 200
    assert not bad.headers["traceresponse"].startswith("00-xyz")
    get = server.metrics.registry.get_sample_value
    # Six spans a request (server, admission, tokenize, queue, inference, response).
    assert get("sentiserve_trace_spans_dropped_total", {"reason": "export_error"}) == 21 * 6
    assert (get("sentiserve_trace_spans_exported_total") or 0) == 0


def test_otel_pairs_are_parsed_and_bad_ones_refused() -> None:
    from sentiserve.errors import ConfigError

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, tenant=a",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=from-resource",
    }
    config = TracingConfig.resolve(None, environ=env)
    assert config is not None
    assert config.headers == (("api-key", "s=cret"), ("tenant", "a"))
    assert config.service_name == "from-resource"
    assert ("deployment.environment", "prod") in config.resource
    with pytest.raises(ConfigError, match="key=value"):
        TracingConfig.resolve(None, environ={**env, "OTEL_EXPORTER_OTLP_HEADERS": "novalue"})
