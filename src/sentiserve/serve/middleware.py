"""Request ids, the API key check and the access log, as one plain ASGI middleware.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs every request
through an extra task group and memory streams, which cost about a millisecond of the event
loop's CPU per request, and on two cores the event loop shares them with the engine.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from sentiserve.errors import SentiserveError
from sentiserve.serve.auth import ApiKey
from sentiserve.serve.batcher import QueueFullError

access_log = logging.getLogger("sentiserve.access")

Scope = dict[str, Any]
Message = dict[str, Any]

LOGGED_PATHS = ("/v1/", "/v2/models")
INFERENCE_PATHS = re.compile(r"^/v1/sentiment$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


class OverloadedError(QueueFullError):
    """``max_in_flight`` requests are inside already; like a full queue, retry shortly."""


def error_response(exc: SentiserveError, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with the error's status (and ``Retry-After`` when the server is
    busy): every error answer of the HTTP API, from a route or from this middleware."""
    extra = dict(headers or {})
    if isinstance(exc, QueueFullError):
        extra["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse({"error": exc.message}, status_code=int(exc.status), headers=extra)


class RequestContext:
    """Echoes or assigns ``X-Request-ID``, refuses unauthorised calls to protected paths
    (401 with ``WWW-Authenticate``), refuses inference beyond ``max_in_flight`` requests
    (503 with ``Retry-After``, before the body is read), and writes one JSON access-log line
    per inference call."""

    def __init__(self, app: Any, api_key: ApiKey, max_in_flight: int,
                 on_overload: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.app = app
        self.api_key = api_key
        self.max_in_flight = max_in_flight
        self.on_overload = on_overload
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        authorization = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        request_id = request_id or uuid.uuid4().hex
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        path: str = scope["path"]
        if self.api_key.protects(path):
            try:
                self.api_key.check(authorization)
            except SentiserveError as exc:
                denied = error_response(exc, {"X-Request-ID": request_id,
                                              "WWW-Authenticate": "Bearer"})  # fmt: skip
                await denied(scope, receive, send)
                return
        inference = INFERENCE_PATHS.match(path) is not None
        if inference and self.in_flight >= self.max_in_flight:
            self.on_overload()
            busy = OverloadedError(
                f"server busy: {self.in_flight} requests in flight; retry shortly"
            )
            await error_response(busy, {"X-Request-ID": request_id})(scope, receive, send)
            return
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        if inference:
            self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if inference:
                self.in_flight -= 1
        if path.startswith(LOGGED_PATHS) and access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "request_id": request_id, "method": scope["method"], "path": path,
                "status": status, "model": scope.get("state", {}).get("model"),
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }))  # fmt: skip
