"""The HTTP edge: the request policy as ASGI middleware, and the lean path for inference.

One plain ASGI app in front of FastAPI. Every request is classified into an
:class:`~sentiserve.serve.policy.Operation` and goes through the one
:class:`~sentiserve.serve.policy.Policy` that gRPC's interceptor applies too: request id
(``X-Request-ID``), authorization, admission (inference beyond ``max_in_flight`` is refused
before its body is read), the one error renderer, the access log. Inference requests
(``POST /v1/sentiment``, ``POST /v2/models/<m>[/versions/<v>]/infer``) are then served
here, by the transports' inference handlers, without FastAPI; every other route (health,
metadata, repository, statistics, the playground, the OpenAPI document) is FastAPI's.

Why inference bypasses FastAPI: on the 2-core machine the event loop shares the cores
with the engines, so its CPU per request is throughput lost. Measured at 32 clients (wrk,
rt texts): the event loop spent 540 µs of CPU per request through FastAPI's routing,
dependency solving, request and response models, and 300 µs through this path, and
throughput went from 507-525 to 571-578 req/s. The request and response documents are
still pydantic models, parsed and validated by pydantic, and published in the OpenAPI
document (generated in :mod:`sentiserve.serve.openapi` from each route's models).

A client that goes away while its request waits (a closed connection, as when a load
balancer or a client times out) cancels the request: its texts leave the queue before they
reach an engine, its place in the in-flight budget is freed, and the access log and
``sentiserve_requests_total`` record it as 499 (nginx's "client closed request"). Without
this, an overloaded server spends its cores on answers nobody reads, and the budget held
by abandoned requests refuses new ones: seen at 256 clients on long texts right after 128,
when the previous level's abandoned requests filled ``max_in_flight``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel

from sentiserve.errors import PayloadTooLargeError, SentiserveError
from sentiserve.serve.policy import Operation, Policy, as_error, http_error
from sentiserve.serve.tracing import span
from sentiserve.serve.v2_codec import parse_version

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"
TRACE_HEADERS = (("traceparent", b"traceparent"), ("tracestate", b"tracestate"))
"""W3C Trace Context: the client's span, which the request's span continues."""
VERSION_HEADER = b"x-model-version"
"""Names the model version of a friendly-API request (as ``?version=N`` does)."""

_MODEL = r"^/v2/models/[^/]+(?:/versions/[^/]+)?"
OPERATIONS = (
    (re.compile(r"^/v1/"), Operation.INFER),
    (re.compile(_MODEL + r"/infer$"), Operation.INFER),
    (re.compile(r"^/v2/repository/"), Operation.REPOSITORY),
    (re.compile(_MODEL + r"/stats$"), Operation.STATISTICS),
    (re.compile(_MODEL + r"/config$"), Operation.METADATA),
    (re.compile(r"^/v2/health/|" + _MODEL + r"/ready$"), Operation.HEALTH),
    (re.compile(r"^/v2(?:/models/[^/]+(?:/versions/[^/]+)?)?$"), Operation.METADATA),
)
"""What each HTTP path asks for, first match wins (anything else: ``Operation.OTHER``)."""


def http_operation(path: str) -> Operation:
    """The operation an HTTP request for ``path`` asks for."""
    for pattern, operation in OPERATIONS:
        if pattern.match(path):
            return operation
    return Operation.OTHER


@dataclass
class Call:
    """One inference request as the transports' handlers see it."""

    path_params: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    state: dict[str, Any] = field(default_factory=dict)
    query: str = ""

    def version(self) -> int | None:
        """The model version a friendly-API request names: ``?version=N`` or the
        ``X-Model-Version`` header (neither: None, the rollout's split decides).

        Raises:
            ModelNotFoundError: Not a version number.
        """
        asked = parse_qs(self.query).get("version", [""])[-1]
        asked = asked or self.headers.get(VERSION_HEADER, b"").decode("latin-1").strip()
        return parse_version(asked)


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Call], Awaitable[Reply]]


PARAMETER = re.compile(r"\{(\w+)\}")
"""A path parameter in a route's path template: ``{model}``."""


def compile_path(template: str) -> re.Pattern[str]:
    """The regular expression of a path template: each ``{name}`` matches one segment."""
    pieces = PARAMETER.split(template)  # literal, name, literal, name, ..., literal
    parts = [
        re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>[^/]+)" for i, piece in enumerate(pieces)
    ]
    return re.compile(f"^{''.join(parts)}$")


@dataclass(frozen=True)
class Route:
    """An inference route served at the edge: ``POST`` on a path template, documented in
    the OpenAPI document from its pydantic models (:mod:`sentiserve.serve.openapi`).

    Attributes:
        path: The path template, ``{name}`` for a parameter (``/v2/models/{model}/infer``).
        handler: Answers a call.
        operation_id: Unique name in the OpenAPI document.
        summary: One line for the OpenAPI document.
        request_model: The request body's model.
        response_model: The success answer's model.
        tag: OpenAPI tag.
        description: More for the OpenAPI document.
        operation: What the policy sees the route ask for.
    """

    path: str
    handler: Handler
    operation_id: str
    summary: str
    request_model: type[BaseModel]
    response_model: type[BaseModel]
    tag: str
    description: str = ""
    operation: Operation = Operation.INFER
    errors: Callable[[SentiserveError], Reply] | None = None
    """How this API renders an error (None: the project's ``{"error": ...}``); the policy's
    refusals (401, 429, 503) on this route are rendered with it too."""
    error_model: type[BaseModel] | None = None
    """The error body's model when ``errors`` renders another shape (for the OpenAPI document)."""
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", compile_path(self.path))

    @property
    def parameters(self) -> list[str]:
        return PARAMETER.findall(self.path)


class RequestTimeoutError(SentiserveError):
    """The request body did not arrive in time."""

    status = HTTPStatus.REQUEST_TIMEOUT


class UnsupportedMediaTypeError(SentiserveError):
    """The request body is declared as something this route does not read."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


def check_content_type(call: Call, *allowed: str) -> None:
    """Refuse (415) a body declared as another media type than ``allowed`` (JSON types
    include ``+json`` suffixes); a body with no Content-Type is read as the first one."""
    declared = call.headers.get(b"content-type")
    if declared is None:
        return
    media = declared.split(b";", 1)[0].strip().lower().decode("latin-1")
    if media in allowed or (media.endswith("+json") and "application/json" in allowed):
        return
    raise UnsupportedMediaTypeError(
        f"Content-Type {media or '(empty)'} is not accepted here; send {' or '.join(allowed)}"
    )


def token_headers(tokens: list[int] | None, kept: list[int] | None) -> list[tuple[bytes, bytes]]:
    """``x-compute-tokens`` (tokens the model saw, TEI's header), ``x-sentiserve-input-tokens``
    (each text's tokens before any cut) and ``x-sentiserve-truncated`` (1 where a text was
    cut), comma-separated in text order; none when the backend does not count."""
    if tokens is None or kept is None:
        return []
    cut = ",".join("1" if k < t else "0" for k, t in zip(kept, tokens, strict=True))
    return [
        (b"x-compute-tokens", str(sum(kept)).encode()),
        (b"x-sentiserve-input-tokens", ",".join(map(str, tokens)).encode()),
        (b"x-sentiserve-truncated", cut.encode()),
    ]


def error_reply(exc: SentiserveError) -> Reply:
    """The policy's HTTP rendering of ``exc`` as a reply."""
    status, body, headers = http_error(exc)
    return Reply(status, body, JSON, headers)


async def send_reply(send: Send, reply: Reply, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
        *extra,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


CLIENT_CLOSED = 499
"""The status recorded for a request whose client went away before its answer (nginx's)."""


WATCH_AFTER_S = 0.05
"""How long a request runs before the edge starts watching for its client leaving: most
answers come sooner and cost a timer, not a task (with a task per request, 1-client latency
on the 2-core machine looked 0.1-0.5 ms worse, within its noise); what waits longer is
what piles up under load."""


async def until_disconnected(work: Awaitable[Reply], receive: Receive) -> Reply:
    """``work``, cancelled if the client disconnects first (then ConnectionAbortedError).

    Called once the body is read: from then on ``receive`` only returns when the client
    has gone (``http.disconnect``). After ``WATCH_AFTER_S`` a watcher task waits on it and
    cancels this one.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.create_task(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        raise ConnectionAbortedError("client disconnected") from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole request body, refused (413) past ``limit`` bytes, declared or sent."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {int(declared)} bytes exceeds {limit}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Edge:
    """The ASGI app the HTTP server runs (see the module docstring).

    Args:
        app: FastAPI, for every route that is not an inference route.
        routes: The inference routes and their handlers.
        policy: The request policy (its limits bound bodies and their arrival time).
    """

    def __init__(self, app: ASGIApp, routes: list[Route], policy: Policy) -> None:
        self.app = app
        self.routes = routes
        self.policy = policy

    def _route(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        if scope["method"] != "POST":
            return None
        for route in self.routes:
            match = route.pattern.match(scope["path"])
            if match is not None:
                return route, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        policy = self.policy
        headers = dict(scope["headers"])
        request_id = policy.request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        path: str = scope["path"]
        route = self._route(scope)
        operation = route[0].operation if route is not None else http_operation(path)
        model: str | None = None
        target = f"{scope['method']} {path}"
        carrier = {
            name: headers[key].decode("latin-1") for name, key in TRACE_HEADERS if key in headers
        }
        with policy.traced("http", operation, target, carrier, request_id) as trace:
            extra = [id_header]
            if trace is not None:
                extra.append((b"traceresponse", trace.traceresponse.encode()))
            try:
                policy.authorize(operation, headers.get(b"authorization", b"").decode("latin-1"))
                with policy.admitted(operation):
                    if route is None:
                        status = await self._forward(scope, receive, send, id_header)
                        model = scope.get("state", {}).get("model")
                    else:
                        query = scope.get("query_string", b"")
                        reply, model = await self._serve(*route, headers, query, receive)
                        if reply is None:  # the client went away; nobody to answer
                            status = CLIENT_CLOSED
                        else:
                            status = reply.status
                            size = {"http.response.body.size": len(reply.body)}
                            with span("response", **size):
                                await send_reply(send, reply, extra)
            except SentiserveError as exc:  # refused by the policy: nothing was read or run
                render = route[0].errors if route is not None else None
                reply = (render or error_reply)(exc)
                status = reply.status
                await send_reply(send, reply, extra)
            policy.finish(
                transport="http",
                operation=operation,
                target=target,
                request_id=request_id,
                status=status,
                start=start,
                model=model,
                trace=trace,
            )

    async def _serve(
        self,
        route: Route,
        params: dict[str, str],
        headers: dict[bytes, bytes],
        query: bytes,
        receive: Receive,
    ) -> tuple[Reply | None, str | None]:
        call = Call(params, headers, b"", query=query.decode("latin-1"))
        limits = self.policy.limits
        try:
            try:
                async with asyncio.timeout(limits.body_timeout_s):
                    call.body = await read_body(receive, headers, limits.max_body_bytes)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body did not arrive within {limits.body_timeout_s:g} s"
                ) from None
            reply = await until_disconnected(route.handler(call), receive)
        except ConnectionAbortedError:
            return None, call.state.get("model")
        except Exception as exc:  # never a traceback to the client; the log has it
            reply = (route.errors or error_reply)(as_error(exc))
        return reply, call.state.get("model")

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, id_header: tuple[bytes, bytes]
    ) -> int:
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
        return status
