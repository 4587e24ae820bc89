"""A real OTLP trace receiver for the tracing tests, over both of OTLP's transports: gRPC
(``TraceService/Export``) and HTTP (``POST /v1/traces``, protobuf, optionally gzipped).
It decodes ``opentelemetry-proto``'s ``ExportTraceServiceRequest`` and keeps every span."""

from __future__ import annotations

import gzip
import json
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc

from tests.integration.serving import free_port


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)

    def inside(self, parent: Span) -> bool:
        return parent.start_ns <= self.start_ns <= self.end_ns <= parent.end_ns


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


class Receiver:
    """Starts both listeners on free loopback ports; ``grpc_url`` and ``http_url`` are what
    an exporter is pointed at."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Service(ts_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC API
                receiver.add(request)
                return ts.ExportTraceServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ts_grpc.add_TraceServiceServicer_to_server(Service(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("content-type", "").startswith("application/json"):
                    receiver.add_json(json.loads(body))  # OTLP/JSON, as Triton sends it
                else:
                    receiver.add(ts.ExportTraceServiceRequest.FromString(body))
                payload = ts.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.http_port = free_port()
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def add(self, request: Any) -> None:
        spans = []
        for resource in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for scope in resource.scope_spans:
                for s in scope.spans:
                    spans.append(
                        Span(
                            service,
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            {a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1

    def add_json(self, doc: dict[str, Any]) -> None:
        """OTLP/JSON: the same message, with ids in hex and 64-bit integers as strings."""

        def attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
            return {a["key"]: next(iter(a.get("value", {}).values()), None) for a in items}

        spans = []
        for resource in doc.get("resourceSpans", []):
            attrs = attributes(resource.get("resource", {}).get("attributes", []))
            for scope in resource.get("scopeSpans", []):
                for s in scope.get("spans", []):
                    spans.append(
                        Span(
                            str(attrs.get("service.name", "")),
                            s["name"],
                            s["traceId"].lower(),
                            s["spanId"].lower(),
                            s.get("parentSpanId", "").lower(),
                            int(s["startTimeUnixNano"]),
                            int(s["endTimeUnixNano"]),
                            attributes(s.get("attributes", [])),
                        )
                    )
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id: str, names: set[str], timeout_s: float = 20.0) -> list[Span]:
        """The spans of ``trace_id`` once every one of ``names`` has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if names <= {s.name for s in spans}:
                return spans
            time.sleep(0.05)
        got = sorted({s.name for s in self.trace(trace_id)})
        raise AssertionError(f"trace {trace_id}: wanted {sorted(names)}, got {got}")

    def stop(self) -> None:
        self._grpc.stop(None)
        self._http.shutdown()
        self._http.server_close()
