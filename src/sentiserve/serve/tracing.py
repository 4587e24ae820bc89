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

Spans are OTLP messages (``opentelemetry-proto``) sent by a background thread, in batches,
over OTLP/gRPC or OTLP/HTTP (protobuf) by ``OTEL_EXPORTER_OTLP_PROTOCOL``
(:mod:`sentiserve.serve.otlp`). A request only
appends to a bounded queue and never waits for the receiver; when the receiver is slow or
down, spans are dropped and counted (``sentiserve_trace_spans_dropped_total``).

Why not the OpenTelemetry SDK's tracer and exporter: they cost about 40 µs of Python per span
(20 to make it, 20 to encode it), and with six spans per request that took 11% of the
throughput of a two-core server at 100% sampling (benchmarks/operations.py). Recording a
span here is a tuple append, and encoding one about 5 µs. What stays standard is the wire
(W3C Trace Context in, OTLP out) and the ``OTEL_*`` variables: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``..._TRACES_ENDPOINT``) turns tracing on, ``OTEL_EXPORTER_OTLP_PROTOCOL``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER_ARG``; settings given to ``sentiserve serve`` win over them. Sampling
is the SDK's default, parent-based trace id ratio: a caller's sampled flag decides, and new
traces are kept when the low 64 bits of their id fall under the ratio. When tracing is off,
each request pays for one attribute check.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from sentiserve.errors import ConfigError

logger = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http/protobuf")
ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_ENV = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
HEADERS_ENV = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
SERVER, INTERNAL, CLIENT = 2, 1, 3
"""OTLP span kinds."""
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
        headers: Sent with every export (``OTEL_EXPORTER_OTLP_HEADERS``: an API key).
        resource: More resource attributes (``OTEL_RESOURCE_ATTRIBUTES``).
    """

    endpoint: str
    protocol: str = "grpc"
    service_name: str = "sentiserve"
    sample: float = 1.0
    headers: tuple[tuple[str, str], ...] = ()
    resource: tuple[tuple[str, str], ...] = ()

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
        resource = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        name = (
            service_name
            or environ.get("OTEL_SERVICE_NAME")
            or dict(resource).get("service.name", "sentiserve")
        )
        if sample is None:
            try:
                sample = float(environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
            except ValueError as exc:
                raise ConfigError("OTEL_TRACES_SAMPLER_ARG must be a number in [0, 1]") from exc
        headers = _pairs(next((environ[n] for n in HEADERS_ENV if environ.get(n)), ""))
        return cls(endpoint, protocol, name, sample, headers, resource)


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``k1=v1,k2=v2`` (values URL-encoded), as the ``OTEL_*`` variables write them."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value pairs separated by commas; got {item!r}")
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return tuple(pairs)


class RequestTrace:
    """One traced request: its server span and the spans recorded under it."""

    __slots__ = (
        "attributes",
        "name",
        "parent_id",
        "span_id",
        "spans",
        "start_ns",
        "status",
        "trace_id",
        "traceresponse",
    )

    def __init__(self, trace: int, parent: int, name: str, attributes: dict[str, Any]) -> None:
        self.span_id = random.getrandbits(64) or 1
        self.parent_id = parent
        self.name = name
        self.attributes = attributes
        self.start_ns = time.time_ns()
        self.status = 0
        self.spans: list[tuple[Any, ...]] = []
        self.trace_id = f"{trace:032x}"
        self.traceresponse = f"00-{self.trace_id}-{self.span_id:016x}-01"
        """W3C Trace Context's response header: the trace and this server's span."""

    def finish(self, status: int) -> None:
        """Record the answer's status (HTTP's; for gRPC, the same decision's)."""
        self.attributes["http.response.status_code"] = status
        if status >= 500:
            self.status = 2  # OTLP's STATUS_CODE_ERROR


_CURRENT: ContextVar[tuple[RequestTrace, int] | None] = ContextVar("sentiserve_trace", default=None)
"""The traced request being served and its current span id (unset: not traced)."""


class Tracing:
    """The server's tracer and exporter (one per server; off: ``config`` None).

    Args:
        config: Where spans go (None: tracing off).
        on_dropped: Called with a reason and a count when spans are lost.
        on_exported: Called with the count of spans the receiver accepted.
    """

    def __init__(
        self,
        config: TracingConfig | None,
        on_dropped: Any = lambda _reason, _n: None,
        on_exported: Any = lambda _n: None,
    ) -> None:
        self.config = config
        self.enabled = config is not None
        self._exporter: Any = None
        if config is not None:
            from sentiserve.serve.otlp import Exporter

            self._exporter = Exporter(config, on_dropped, on_exported)
        # Parent-based trace id ratio: a new trace is kept when its low 64 bits are below.
        self._bound = round((config.sample if config else 0.0) * (1 << 64))

    @contextmanager
    def request(
        self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]
    ) -> Iterator[RequestTrace | None]:
        """The server span of one request, a child of ``carrier``'s ``traceparent``; yields
        None when tracing is off or this request is not sampled."""
        if self._exporter is None:
            yield None
            return
        parent = TRACEPARENT.match(carrier.get("traceparent", "").strip().lower())
        if parent is not None and parent.group(1) != "ff" and int(parent.group(2), 16) != 0:
            trace, parent_id = int(parent.group(2), 16), int(parent.group(3), 16)
            sampled = bool(int(parent.group(4), 16) & 1)
        else:
            trace, parent_id = random.getrandbits(128) or 1, 0
            sampled = (trace & 0xFFFF_FFFF_FFFF_FFFF) < self._bound
        if not sampled:
            yield None
            return
        request = RequestTrace(trace, parent_id, name, dict(attributes))
        token = _CURRENT.set((request, request.span_id))
        try:
            yield request
        finally:
            _CURRENT.reset(token)
            self._exporter.add(request, time.time_ns())

    def close(self) -> None:
        """Export what is queued (a few seconds at most), then stop."""
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None
            self.enabled = False


class _Child:
    """A child span of the current request's, as a context manager (see :func:`span`)."""

    __slots__ = (
        "attributes",
        "kind",
        "name",
        "span_id",
        "start_ns",
        "_request",
        "_parent",
        "_token",
    )

    def __init__(
        self, request: RequestTrace, parent: int, name: str, kind: int, attributes: dict[str, Any]
    ) -> None:
        self._request, self._parent = request, parent
        self.name, self.kind, self.attributes = name, kind, attributes
        self.span_id = random.getrandbits(64) or 1
        self.start_ns = 0
        self._token: Any = None

    def __enter__(self) -> _Child:
        self.start_ns = time.time_ns()
        self._token = _CURRENT.set((self._request, self.span_id))
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        _CURRENT.reset(self._token)
        status = 2 if error is not None else 0
        self._request.spans.append(
            (
                self.name,
                self.span_id,
                self._parent,
                self.start_ns,
                time.time_ns(),
                self.attributes,
                self.kind,
                status,
            )
        )

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


def span(name: str, *, kind: int = INTERNAL, **attributes: Any) -> AbstractContextManager[Any]:
    """A child span of the current request's (a no-op when it is not traced); what it yields
    has ``set_attribute``."""
    current = _CURRENT.get()
    if current is None:
        return _NULL
    return _Child(current[0], current[1], name, kind, attributes)


def record(name: str, start: float, end: float, **attributes: Any) -> None:
    """A child span of the current request's that already happened (``time.monotonic()``
    bounds), such as its wait in the batcher's queue, measured by another thread."""
    current = _CURRENT.get()
    if current is None:
        return
    offset = time.time_ns() - time.monotonic_ns()
    span_id = random.getrandbits(64) or 1
    begin, finish = int(start * 1e9) + offset, int(end * 1e9) + offset
    current[0].spans.append((name, span_id, current[1], begin, finish, attributes, INTERNAL, 0))


def traced() -> bool:
    """Whether the current request is traced (to skip gathering what only spans need)."""
    return _CURRENT.get() is not None


def headers() -> dict[str, str]:
    """The current span as a W3C ``traceparent`` header, for a call this request makes (the
    gateway's to Triton); empty when it is not traced."""
    current = _CURRENT.get()
    if current is None:
        return {}
    return {"traceparent": f"00-{current[0].trace_id}-{current[1]:016x}-01"}
