"""The OTLP exporter of :mod:`sentiserve.serve.tracing`: a thread that turns the queued
requests' spans into ``ExportTraceServiceRequest`` messages and sends them over OTLP/gRPC or
OTLP/HTTP (protobuf), every ``EXPORT_EVERY_S``, never making a request wait."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sentiserve.serve.tracing import SERVER, RequestTrace, TracingConfig

logger = logging.getLogger(__name__)

EXPORT_EVERY_S = 0.5
"""The exporter thread wakes this often (a timer: waking it per request costs more)."""
MAX_BATCH = 2048
MAX_QUEUED = 20_000
"""Spans waiting for the exporter, at most; beyond, new ones are dropped and counted."""
EXPORT_TIMEOUT_S = 10.0


class Exporter:
    """A thread that sends the queued requests' spans to the receiver every
    ``EXPORT_EVERY_S``, at most ``MAX_BATCH`` per message."""

    def __init__(self, config: TracingConfig, on_dropped: Any, on_exported: Any) -> None:
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2

        from sentiserve import __version__

        self.config = config
        self._on_dropped = on_dropped
        self._on_exported = on_exported
        self._queue: collections.deque[tuple[RequestTrace, int]] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        attributes = {
            **dict(config.resource),
            "service.name": config.service_name,
            "service.version": __version__,
            "telemetry.sdk.name": "sentiserve",
            "telemetry.sdk.language": "python",
        }
        self._resource = resource_pb2.Resource(
            attributes=[
                common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                for k, v in attributes.items()
            ]
        )
        self._send = _http_sender(config) if config.protocol != "grpc" else _grpc_sender(config)
        self._warned = 0.0
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    def add(self, request: RequestTrace, end_ns: int) -> None:
        count = len(request.spans) + 1
        if self._queued + count > MAX_QUEUED:
            self._on_dropped("queue_full", count)
            return
        with self._lock:
            self._queue.append((request, end_ns))
            self._queued += count

    def _run(self) -> None:
        while not self._stop.wait(EXPORT_EVERY_S):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        while self._queue:
            batch: list[tuple[RequestTrace, int]] = []
            size = 0
            with self._lock:
                while self._queue and size < MAX_BATCH:
                    item = self._queue.popleft()
                    batch.append(item)
                    size += len(item[0].spans) + 1
                self._queued -= size
            message = self._message(batch)
            try:
                self._send(message.SerializeToString())
            except Exception as exc:  # the receiver's trouble is never the server's
                self._on_dropped("export_error", size)
                now = time.monotonic()
                if now - self._warned > 60:
                    self._warned = now
                    logger.warning("trace export to %s failed: %s", self.config.endpoint, exc)
                continue
            self._on_exported(size)

    def _message(self, batch: list[tuple[RequestTrace, int]]) -> Any:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        message = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = message.resource_spans.add()
        resource_spans.resource.CopyFrom(self._resource)
        scope = resource_spans.scope_spans.add()
        scope.scope.name = "sentiserve"
        spans = scope.spans
        for request, end_ns in batch:
            trace = bytes.fromhex(request.trace_id)
            root = spans.add(
                trace_id=trace,
                span_id=request.span_id.to_bytes(8, "big"),
                parent_span_id=request.parent_id.to_bytes(8, "big") if request.parent_id else b"",
                name=request.name,
                kind=SERVER,
                start_time_unix_nano=request.start_ns,
                end_time_unix_nano=end_ns,
            )
            _attributes(root, request.attributes)
            if request.status:
                root.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            for name, span_id, parent, start, end, attributes, kind, status in request.spans:
                child = spans.add(
                    trace_id=trace,
                    span_id=span_id.to_bytes(8, "big"),
                    parent_span_id=parent.to_bytes(8, "big"),
                    name=name,
                    kind=kind,
                    start_time_unix_nano=start,
                    end_time_unix_nano=end,
                )
                _attributes(child, attributes)
                if status:
                    child.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        return message

    def close(self) -> None:
        self._stop.set()
        self._thread.join(EXPORT_TIMEOUT_S)


def _attributes(span: Any, attributes: Mapping[str, Any]) -> None:
    for key, value in attributes.items():
        item = span.attributes.add(key=key)
        if isinstance(value, bool):
            item.value.bool_value = value
        elif isinstance(value, int):
            item.value.int_value = value
        elif isinstance(value, float):
            item.value.double_value = value
        else:
            item.value.string_value = str(value)


def _http_sender(config: TracingConfig) -> Any:
    """POST protobuf bodies to the OTLP/HTTP receiver over one kept-alive connection."""
    import http.client

    url = urlsplit(config.endpoint)
    path = url.path if url.path not in ("", "/") else "/v1/traces"
    factory = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    headers = {"content-type": "application/x-protobuf", **dict(config.headers)}
    state: dict[str, Any] = {"connection": None}

    def send(body: bytes) -> None:
        for attempt in (1, 2):  # once more on a fresh connection if a kept one went stale
            connection = state["connection"] or factory(url.netloc, timeout=EXPORT_TIMEOUT_S)
            state["connection"] = connection
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                state["connection"] = None
                if attempt == 2:
                    raise
                continue
            if response.status >= 300:
                raise OSError(f"HTTP {response.status} from {config.endpoint}")
            return

    return send


def _grpc_sender(config: TracingConfig) -> Any:
    """Call ``TraceService/Export`` on the OTLP/gRPC receiver (TLS for ``https://``)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    url = urlsplit(config.endpoint)
    if url.scheme == "https":
        channel = grpc.secure_channel(url.netloc, grpc.ssl_channel_credentials())
    else:
        channel = grpc.insecure_channel(url.netloc)
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda body: body,
        response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
    )
    metadata = tuple((k.lower(), v) for k, v in config.headers)

    def send(body: bytes) -> None:
        export(body, timeout=EXPORT_TIMEOUT_S, metadata=metadata)

    return send
