"""OpenTelemetry tracing of inference requests, off unless an OTLP endpoint is configured.

The policy opens one server span per inference request, over HTTP and gRPC alike, as the
child of the client's W3C ``traceparent`` when it sent one, and answers with the trace in a
``traceresponse`` header (gRPC: trailing metadata) and the access log's ``trace_id``. Inside
it, the data plane records:

- ``admission``: the in-flight budget's decision;
- ``tokenize``: the texts to token ids (``sentiserve.texts``, ``sentiserve.tokens``);
- ``queue``: waiting in the batcher for an engine;
- ``inference``: the engine run of the request's batch (``sentiserve.batch_size``, its
  ``sentiserve.batch_tokens`` padded tokens); one per batch the request's texts went into;
- ``triton``: through the gateway, the call to Triton, whose ``traceparent`` carries the
  context on, so Triton's own spans (``--trace-config mode=opentelemetry``) join the trace;
- ``response``: writing the answer.

Spans go to the OpenTelemetry SDK's batch processor, which exports them from its own thread
over OTLP (``grpc``, or ``http/protobuf`` by ``OTEL_EXPORTER_OTLP_PROTOCOL``): a request
never waits for the exporter, and when it falls behind spans are dropped, not queued
without bound. The standard ``OTEL_*`` variables apply (``OTEL_EXPORTER_OTLP_ENDPOINT`` and
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` turn tracing on, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ...); settings given to
``sentiserve serve`` win over them. When tracing is off, nothing of OpenTelemetry is
imported and each request pays for one ``None`` check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sentiserve.errors import ConfigError

PROTOCOLS = ("grpc", "http/protobuf")
ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_ENV = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_NULL: AbstractContextManager[None] = nullcontext()


@dataclass(frozen=True)
class TracingConfig:
    """Where spans go and which requests are traced.

    Attributes:
        endpoint: The OTLP receiver (``http://collector:4317`` for gRPC,
            ``http://collector:4318`` for HTTP; ``/v1/traces`` is added to an HTTP one
            without a path).
        protocol: ``grpc`` or ``http/protobuf``.
        service_name: The ``service.name`` resource attribute.
        sample: Share of new traces recorded; a request whose ``traceparent`` says sampled
            (or not) follows its caller.
    """

    endpoint: str
    protocol: str = "grpc"
    service_name: str = "sentiserve"
    sample: float = 1.0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"the OTLP protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}"
            )
        if not 0 <= self.sample <= 1:
            raise ConfigError("the trace sampling ratio must be within [0, 1]")
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"the OTLP endpoint must be an http(s):// URL; got {self.endpoint!r}")

    @classmethod
    def resolve(
        cls,
        endpoint: str | None,
        service_name: str | None = None,
        sample: float | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> TracingConfig | None:
        """Settings over the standard ``OTEL_*`` variables; None (off) without an endpoint."""
        endpoint = endpoint or next((environ[n] for n in ENDPOINT_ENV if environ.get(n)), None)
        if not endpoint:
            return None
        protocol = next((environ[n] for n in PROTOCOL_ENV if environ.get(n)), "grpc")
        name = service_name or environ.get("OTEL_SERVICE_NAME") or "sentiserve"
        if sample is None:
            sample = float(environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
        return cls(endpoint, protocol, name, sample)


_TRACER: ContextVar[Any] = ContextVar("sentiserve_tracer", default=None)
"""The tracer of the request being served, set only while its span records (so that every
helper below is a no-op for requests that are not traced)."""


class Tracing:
    """The server's tracer provider and exporter (one per server; off: ``config`` None)."""

    def __init__(self, config: TracingConfig | None) -> None:
        self.config = config
        self._provider: Any = None
        self._tracer: Any = None
        self._propagator: Any = None
        if config is not None:
            self._start(config)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _start(self, config: TracingConfig) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from sentiserve import __version__

        resource = Resource.create(
            {"service.name": config.service_name, "service.version": __version__}
        )
        sampler = ParentBased(TraceIdRatioBased(config.sample))
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        self._provider.add_span_processor(BatchSpanProcessor(_exporter(config)))
        self._tracer = self._provider.get_tracer("sentiserve")
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def request(
        self,
        name: str,
        carrier: Mapping[str, str],
        attributes: Mapping[str, Any],
    ) -> Iterator[RequestTrace | None]:
        """The server span of one request, a child of ``carrier``'s ``traceparent``; yields
        None when tracing is off or this request is not sampled."""
        if self._tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract(carrier)
        with self._tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
        ) as span:
            if not span.is_recording():
                yield None
                return
            token = _TRACER.set(self._tracer)
            try:
                yield RequestTrace(span)
            finally:
                _TRACER.reset(token)

    def close(self) -> None:
        """Export what is queued (a few seconds at most), then stop."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None


class RequestTrace:
    """The recording server span of one request."""

    def __init__(self, span: Any) -> None:
        self.span = span
        context = span.get_span_context()
        self.trace_id = f"{context.trace_id:032x}"
        self.traceresponse = f"00-{self.trace_id}-{context.span_id:016x}-01"
        """W3C Trace Context's response header: the trace and this server's span."""

    def finish(self, status: int) -> None:
        """Record the answer's status (HTTP's; for gRPC, the same decision's)."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A child span of the current request's (a no-op when it is not traced)."""
    tracer = _TRACER.get()
    if tracer is None:
        return _NULL
    started: AbstractContextManager[Any] = tracer.start_as_current_span(name, attributes=attributes)
    return started


def record(name: str, start: float, end: float, **attributes: Any) -> None:
    """A child span of the current request's that already happened (``time.monotonic()``
    bounds), such as its wait in the batcher's queue, measured by another thread."""
    tracer = _TRACER.get()
    if tracer is None:
        return
    offset = time.time_ns() - time.monotonic_ns()
    started = tracer.start_span(name, start_time=int(start * 1e9) + offset, attributes=attributes)
    started.end(end_time=int(end * 1e9) + offset)


def traced() -> bool:
    """Whether the current request is traced (to skip gathering what only spans need)."""
    return _TRACER.get() is not None


def headers() -> dict[str, str]:
    """The current span's context as W3C ``traceparent`` (and ``tracestate``) headers, for
    a call this request makes (the gateway's to Triton); empty when it is not traced."""
    if _TRACER.get() is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def _exporter(config: TracingConfig) -> Any:
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = config.endpoint.startswith("http://")
        return OTLPSpanExporter(endpoint=config.endpoint, insecure=insecure)
    from urllib.parse import urlsplit

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    endpoint = config.endpoint
    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return HttpExporter(endpoint=endpoint)
