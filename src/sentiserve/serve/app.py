"""The composition root: builds the registry, data plane, transports and metrics server."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sentiserve import __version__
from sentiserve.errors import SentiserveError
from sentiserve.serve import playground, rest_v1, rest_v2
from sentiserve.serve.auth import ApiKey
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.dataplane import DataPlane, Limits
from sentiserve.serve.gateway import GatewayPlane, health_router
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.middleware import RequestContext, error_response
from sentiserve.serve.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``sentiserve serve`` is configured with."""

    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    metrics_port: int = 8002
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    threads: int | None = None
    engine: str | None = None
    drain_seconds: float = 30.0
    api_key: str | None = None
    model_control: bool = False
    triton_url: str | None = None
    """Gateway mode: Triton's gRPC ``host:port``; no models are loaded here."""
    triton_model: str = "sentiment"
    """Gateway mode: the Triton model whose readiness is this server's readiness."""


@dataclass
class Server:
    """A built server: the FastAPI app plus what it is made of (``registry`` is None in
    gateway mode, where ``plane`` is a :class:`GatewayPlane`)."""

    app: FastAPI
    plane: DataPlane | GatewayPlane
    registry: Registry | None
    metrics: Metrics

    def stop_accepting(self) -> None:
        self.plane.accepting = False

    def close(self) -> None:
        if self.registry is not None:
            self.registry.stop()


def _app(plane: DataPlane | GatewayPlane, metrics: Metrics, limits: Limits) -> FastAPI:
    """The FastAPI app with error handling, the friendly API, the playground and the
    request middleware; the caller adds the protocol routes."""
    app = FastAPI(title="sentiserve", version=__version__,
                  description="Sentiment classification: friendly REST and KServe v2.")  # fmt: skip

    @app.exception_handler(SentiserveError)
    async def sentiserve_error(_request: Request, exc: SentiserveError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse({"error": message}, status_code=HTTPStatus.BAD_REQUEST)

    app.include_router(rest_v1.router(plane))
    app.include_router(playground.router())
    app.add_middleware(
        RequestContext, api_key=plane.api_key, max_in_flight=limits.max_in_flight,
        on_overload=metrics.overload_rejected.inc,
    )  # fmt: skip
    return app


def build_server(config: ServerConfig) -> Server:
    """Load every model (verified, warmed up) and assemble the HTTP app; in gateway mode
    (``triton_url`` set), the friendly API in front of Triton instead."""
    metrics = Metrics()
    if config.triton_url:
        gateway = GatewayPlane(config.triton_url, metrics, config.limits, ApiKey(config.api_key))
        app = _app(gateway, metrics, config.limits)
        app.include_router(health_router(gateway, config.triton_model))
        return Server(app, gateway, None, metrics)
    registry = Registry(
        config.repository, config.batching, threads=config.threads, engine=config.engine,
        on_batch=metrics.record_batch,
    )  # fmt: skip
    plane = DataPlane(registry, metrics, config.limits, ApiKey(config.api_key),
                      model_control=config.model_control)  # fmt: skip
    registry.load_all()
    app = _app(plane, metrics, config.limits)
    app.include_router(rest_v2.router(plane))
    return Server(app, plane, registry, metrics)


class _MetricsHandler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.metrics.exposition()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


class BindError(SentiserveError):
    """A port cannot be bound (in use, or not permitted)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


def bind_error(what: str, host: str, port: int, exc: Exception) -> BindError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return BindError(f"cannot bind {what} to {host}:{port}: {reason}")


def bind(host: str, port: int, what: str) -> socket.socket:
    """Bind a listening socket now, so a port in use is one clear error before loading."""
    try:
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise bind_error(what, host, port, exc) from exc
    # Accepted connections inherit TCP_NODELAY. Without it, a response written as headers
    # then body waits for the client's delayed ACK: about 40 ms on every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def start_metrics_server(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("MetricsHandler", (_MetricsHandler,), {"metrics": metrics})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def run(config: ServerConfig, on_ready: Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting, drain in-flight work, exit."""
    import uvicorn

    http_socket = bind(config.host, config.http_port, "HTTP")
    server = build_server(config)
    try:
        metrics_http = start_metrics_server(server.metrics, config.host, config.metrics_port)
    except OSError as exc:
        server.close()
        raise bind_error("metrics", config.host, config.metrics_port, exc) from exc

    class Graceful(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Readiness goes false first; uvicorn then stops accepting connections and
            # waits (up to drain_seconds) for in-flight requests before it exits.
            server.stop_accepting()
            super().handle_exit(sig, frame)

    uv = Graceful(uvicorn.Config(
        server.app, host=config.host, port=config.http_port, log_level="warning",
        timeout_graceful_shutdown=int(config.drain_seconds), lifespan="off",
    ))  # fmt: skip

    async def main() -> None:
        grpc_server = None
        if config.grpc_port is not None and isinstance(server.plane, DataPlane):
            from sentiserve.serve.grpc_v2 import start_grpc

            try:
                grpc_server = await start_grpc(server.plane, config.host, config.grpc_port)
            except (OSError, RuntimeError) as exc:
                raise bind_error("gRPC", config.host, config.grpc_port, exc) from exc
        task = asyncio.create_task(uv.serve(sockets=[http_socket]))
        while not uv.started and not task.done():
            await asyncio.sleep(0.01)
        if uv.started:
            on_ready()
        try:
            await task
        finally:
            if grpc_server is not None:
                await grpc_server.stop(config.drain_seconds)
            if isinstance(server.plane, GatewayPlane):
                await server.plane.close()

    try:
        asyncio.run(main())
    finally:
        server.close()
        metrics_http.shutdown()
