"""Request policy: what every request goes through, whatever transport it came over.

One :class:`Policy` is built in the composition root and applied by every transport: as
ASGI middleware on HTTP (:mod:`sentiserve.serve.edge`) and as a server interceptor on gRPC
(:mod:`sentiserve.serve.grpc_v2`). For each request, in this order:

1. **Request id**: the client's ``X-Request-ID`` (HTTP header or gRPC metadata), else one
   made here; echoed in the response either way.
2. **Authorization** by :class:`Operation`, not by path: inference and model control need
   a valid API key when keys are configured; health, metadata and statistics stay open.
3. **Admission**: inference is counted against one budget, ``max_in_flight``, shared by
   HTTP and gRPC. Beyond it the request is refused at once (503 / gRPC UNAVAILABLE, with
   ``Retry-After``), before its body is read on HTTP, and counted in
   ``sentiserve_overload_rejected``.
4. **Errors** are rendered by one renderer per wire (:func:`http_error`, :func:`grpc_error`)
   from the one error table (``errors.ERROR_TABLE``); an unexpected exception is logged here
   and answered as an internal error, never a traceback.
5. **Access log and outcome metric**: one JSON line per request (not for health probes or
   pages) with the request id, transport, operation, status and latency, and
   ``sentiserve_requests_total{transport, operation, status}``.
6. **Tracing** (when an OTLP endpoint is configured): one server span per inference
   request, the child of the client's ``traceparent``, answered with ``traceresponse``
   (:mod:`sentiserve.serve.tracing`).

The data planes know none of this: they own the protocol, not the request's passage.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

from pydantic import ValidationError

from sentiserve.errors import (
    ConfigError,
    InvalidInputError,
    QueueFullError,
    SentiserveError,
    grpc_code,
    validation_message,
)
from sentiserve.serve.auth import ApiKeys
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.tracing import RequestTrace, Tracing, span

logger = logging.getLogger(__name__)
access_log = logging.getLogger("sentiserve.access")
_UNTRACED: AbstractContextManager[None] = nullcontext()

REQUEST_ID: ContextVar[str | None] = ContextVar("sentiserve_request_id", default=None)
"""The id of the request being served, set when the policy names it (HTTP and gRPC alike),
for what runs on its behalf (the payload log)."""


class Operation(StrEnum):
    """What a request asks for; the policy decides by this, whatever the transport."""

    HEALTH = "health"
    METADATA = "metadata"
    INFER = "infer"
    STATISTICS = "statistics"
    REPOSITORY = "repository"
    OTHER = "other"
    """Pages (the playground, the API docs) and anything unknown."""


PROTECTED = frozenset({Operation.INFER, Operation.REPOSITORY})
"""Operations that need an API key when keys are configured."""
ADMITTED = frozenset({Operation.INFER})
"""Operations counted against ``max_in_flight``."""
LOGGED = frozenset(
    {Operation.INFER, Operation.METADATA, Operation.STATISTICS, Operation.REPOSITORY}
)
"""Operations with an access-log line (health probes and pages would drown it)."""


@dataclass(frozen=True)
class TransportLimits:
    """Limits on a request's passage through a transport (the data plane's own per-request
    limits are :class:`~sentiserve.serve.plane.Limits`).

    Attributes:
        max_in_flight: Most inference requests inside the server at once, over HTTP and
            gRPC together (being read, tokenized, queued or run).
        max_body_bytes: Largest request body (HTTP) or message (gRPC).
        body_timeout_s: Longest an HTTP inference request's body may take to arrive (408).
        keep_alive_s: An idle HTTP keep-alive connection is closed after this long.
    """

    max_in_flight: int = 512
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not (self.body_timeout_s > 0 and self.keep_alive_s > 0):
            raise ConfigError("body_timeout_s and keep_alive_s must be > 0")


class OverloadedError(QueueFullError):
    """``max_in_flight`` requests are inside already; like a full queue, retry shortly."""


def as_error(exc: BaseException) -> SentiserveError:
    """The error a client is told about: ours as they are, pydantic's as a 400, anything
    else (a bug) logged here with its traceback and answered as an internal error."""
    if isinstance(exc, SentiserveError):
        return exc
    if isinstance(exc, ValidationError):
        return InvalidInputError(validation_message(exc))
    logger.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return SentiserveError("internal error; see the server log")


def http_error(exc: SentiserveError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, ``{"error": message}`` JSON body and extra headers (``Retry-After`` when
    busy, ``WWW-Authenticate`` when a key is missing) of an HTTP error answer."""
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, QueueFullError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    if exc.status == HTTPStatus.UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    return int(exc.status), json.dumps({"error": exc.message}).encode(), headers


def grpc_error(exc: SentiserveError) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """gRPC status code name, details and trailing metadata of an error answer."""
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, QueueFullError):
        trailers = (("retry-after", str(exc.retry_after_s)),)
    return grpc_code(exc), exc.message, trailers


class RequestIds:
    """32 hex characters, unique per process: a random prefix and a counter (a uuid4 per
    request costs a getrandom system call on the event loop)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class Policy:
    """The request policy every transport applies (see the module docstring).

    Args:
        keys: The API keys (checking is off when none are configured).
        limits: The transport limits; ``max_in_flight`` is the shared admission budget.
        metrics: Where refusals and outcomes are counted.
    """

    def __init__(
        self,
        keys: ApiKeys,
        limits: TransportLimits,
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.keys = keys
        self.limits = limits
        self.metrics = metrics
        self.tracing = tracing or Tracing(None)
        self.in_flight = 0
        self.accepting = True
        self._ids = RequestIds()

    def request_id(self, given: str | None) -> str:
        """The client's request id when it sent one, else a new one; also the current
        request's id (:data:`REQUEST_ID`) for what runs on its behalf."""
        request_id = given or self._ids.next()
        REQUEST_ID.set(request_id)
        return request_id

    def authorize(self, operation: Operation, credential: str | None) -> None:
        """Raise UnauthorizedError unless ``operation`` is open or ``credential`` (an
        ``Authorization`` value) carries a valid key."""
        if operation in PROTECTED and self.keys.enabled:
            self.keys.check(credential)

    @contextmanager
    def admitted(self, operation: Operation) -> Iterator[None]:
        """Hold one of the ``max_in_flight`` places while the block runs (inference only).

        Raises:
            OverloadedError: Every place is taken (counted in the overload metric).
        """
        if operation not in ADMITTED:
            yield
            return
        with span("admission", **{"sentiserve.in_flight": self.in_flight}):
            if self.in_flight >= self.limits.max_in_flight:
                self.metrics.overload_rejected.inc()
                raise OverloadedError(
                    f"server busy: {self.in_flight} requests in flight; retry shortly"
                )
            self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def traced(
        self,
        transport: str,
        operation: Operation,
        target: str,
        carrier: Mapping[str, str],
        request_id: str,
    ) -> AbstractContextManager[RequestTrace | None]:
        """The span of an inference request (None: tracing is off, or not this request);
        ``carrier`` holds the client's ``traceparent`` and ``tracestate``, if any."""
        if operation not in ADMITTED or not self.tracing.enabled:
            return _UNTRACED
        attributes = {"sentiserve.transport": transport, "sentiserve.request_id": request_id}
        return self.tracing.request(target, carrier, attributes)

    def ready(self, serving: bool) -> bool:
        """Readiness: the plane can serve and the server is not draining."""
        return self.accepting and serving

    def finish(
        self,
        *,
        transport: str,
        operation: Operation,
        target: str,
        request_id: str,
        status: int,
        start: float,
        model: str | None = None,
        trace: RequestTrace | None = None,
    ) -> None:
        """Count the outcome and write the access-log line of one finished request.

        Args:
            target: ``METHOD /path`` on HTTP, the method name on gRPC.
            status: The HTTP status, or on gRPC the HTTP status of the same decision.
            start: ``time.perf_counter()`` when the request arrived.
        """
        if trace is not None:
            trace.finish(status)
        if operation not in LOGGED:
            return
        self.metrics.requests.labels(transport, operation.value, str(status)).inc()
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "transport": transport,
                        "operation": operation.value,
                        "target": target,
                        "status": status,
                        "model": model,
                        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                        "trace_id": None if trace is None else trace.trace_id,
                    }
                )
            )
