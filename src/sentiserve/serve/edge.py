"""The HTTP edge: what every request goes through, and the lean path for inference.

One plain ASGI app in front of FastAPI. For every request it echoes or assigns
``X-Request-ID``, refuses unauthorised calls to protected paths (401 with
``WWW-Authenticate``) and writes one JSON access-log line per inference call. Inference
requests (``POST /v1/sentiment``, ``POST /v2/models/<m>[/versions/<v>]/infer``) are refused
beyond ``max_in_flight`` (503 with ``Retry-After``, before the body is read) and are then
served here, by the transports' inference handlers, without FastAPI; every other route
(health, metadata, repository, statistics, the playground, the OpenAPI document) is
FastAPI's.

Why inference bypasses FastAPI: on the 2-core machine the event loop shares the cores
with the engines, so its CPU per request is throughput lost. Measured at 32 clients (wrk,
rt texts): the event loop spent 540 µs of CPU per request through FastAPI's routing,
dependency solving, request and response models, and 300 µs through this path, and
throughput went from 507-525 to 571-578 req/s. The request and response documents are
still pydantic models, parsed and validated by pydantic, and published in the OpenAPI
document (see ``openapi_paths``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from sentiserve.errors import PayloadTooLargeError, QueueFullError, SentiserveError
from sentiserve.serve.auth import ApiKeys

logger = logging.getLogger(__name__)
access_log = logging.getLogger("sentiserve.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGGED_PATHS = ("/v1/", "/v2/models")
JSON = b"application/json"


@dataclass
class Call:
    """One inference request as the transports' handlers see it."""

    path_params: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """An inference route served at the edge: ``POST`` on a path pattern."""

    pattern: re.Pattern[str]
    handler: Handler


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


class OverloadedError(QueueFullError):
    """``max_in_flight`` requests are inside already; like a full queue, retry shortly."""


def error_reply(exc: SentiserveError) -> Reply:
    """``{"error": message}`` with the error's status, and ``Retry-After`` when busy."""
    headers = []
    if isinstance(exc, QueueFullError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    body = json.dumps({"error": exc.message}).encode()
    return Reply(int(exc.status), body, JSON, headers)


async def send_reply(send: Send, reply: Reply, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        *reply.headers,
        *extra,
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


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


class RequestIds:
    """32 hex characters, unique per process: a random prefix and a counter (a uuid4 per
    request costs a getrandom system call on the event loop)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class Edge:
    """The ASGI app the HTTP server runs (see the module docstring).

    Args:
        app: FastAPI, for every route that is not an inference route.
        routes: The inference routes and their handlers.
        api_key: The API key check.
        max_in_flight: Most inference requests inside at once.
        max_body_bytes: Largest inference request body.
        body_timeout_s: Longest an inference request's body may take to arrive (a client
            that sends it byte by byte would otherwise hold an in-flight slot forever).
        on_overload: Called for each request refused for ``max_in_flight``.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: list[Route],
        api_key: ApiKeys,
        *,
        max_in_flight: int,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
        on_overload: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.api_key = api_key
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.on_overload = on_overload
        self.in_flight = 0
        self._ids = RequestIds()

    def _route(self, scope: Scope) -> tuple[Handler, dict[str, str]] | None:
        if scope["method"] != "POST":
            return None
        for route in self.routes:
            match = route.pattern.match(scope["path"])
            if match is not None:
                return route.handler, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1") or self._ids.next()
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        path: str = scope["path"]
        if self.api_key.protects(path):
            try:
                self.api_key.check(headers.get(b"authorization", b"").decode("latin-1") or None)
            except SentiserveError as exc:
                await send_reply(
                    send, error_reply(exc), [id_header, (b"www-authenticate", b"Bearer")]
                )
                return
        route = self._route(scope)
        if route is None:
            status = await self._forward(scope, receive, send, id_header)
            model = scope.get("state", {}).get("model")
        else:
            if self.in_flight >= self.max_in_flight:
                self.on_overload()
                busy = OverloadedError(
                    f"server busy: {self.in_flight} requests in flight; retry shortly"
                )
                await send_reply(send, error_reply(busy), [id_header])
                return
            self.in_flight += 1
            try:
                reply, model = await self._serve(route, headers, receive)
            finally:
                self.in_flight -= 1
            if reply is None:  # the client went away; nobody to answer
                return
            status = reply.status
            await send_reply(send, reply, [id_header])
        if path.startswith(LOGGED_PATHS) and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "model": model,
                        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                    }
                )
            )

    async def _serve(
        self, route: tuple[Handler, dict[str, str]], headers: dict[bytes, bytes], receive: Receive
    ) -> tuple[Reply | None, str | None]:
        handler, params = route
        call = Call(params, headers, b"")
        try:
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    call.body = await read_body(receive, headers, self.max_body_bytes)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body did not arrive within {self.body_timeout_s:g} s"
                ) from None
            reply = await handler(call)
        except SentiserveError as exc:
            reply = error_reply(exc)
        except ConnectionAbortedError:
            return None, None
        except Exception:  # never a traceback to the client; the log has it
            logger.exception("inference request failed")
            reply = error_reply(SentiserveError("internal error; see the server log"))
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
