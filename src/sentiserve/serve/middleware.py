"""Request ids, the API key check and the access log, as one plain ASGI middleware.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs every request
through an extra task group and memory streams, which cost about a millisecond of the event
loop's CPU per request, and on two cores the event loop shares them with the engine.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from sentiserve.errors import SentiserveError
from sentiserve.serve.auth import ApiKey

access_log = logging.getLogger("sentiserve.access")

Scope = dict[str, Any]
Message = dict[str, Any]

LOGGED_PATHS = ("/v1/", "/v2/models")


class RequestContext:
    """Echoes or assigns ``X-Request-ID``, refuses unauthorised calls to protected paths
    (401 with ``WWW-Authenticate``), and writes one JSON access-log line per inference call."""

    def __init__(self, app: Any, api_key: ApiKey) -> None:
        self.app = app
        self.api_key = api_key

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
                await _refuse(send, exc, [id_header, (b"www-authenticate", b"Bearer")])
                return
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
        if path.startswith(LOGGED_PATHS) and access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({
                "request_id": request_id, "method": scope["method"], "path": path,
                "status": status, "model": scope.get("state", {}).get("model"),
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }))  # fmt: skip


async def _refuse(send: Any, exc: SentiserveError, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"error": exc.message}).encode()
    await send({
        "type": "http.response.start", "status": int(exc.status),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
