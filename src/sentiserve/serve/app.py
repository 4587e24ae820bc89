"""The composition root: builds the data plane (embedded or Triton gateway), the one request
policy, the HTTP edge and FastAPI app, the gRPC server and the metrics server, and runs
them."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from sentiserve import DEFAULT_MODEL, __version__
from sentiserve.engine.instances import InstanceConfig
from sentiserve.errors import ConfigError, InvalidInputError, SentiserveError, validation_message
from sentiserve.repository.rollout import Rollout
from sentiserve.serve import openapi, playground, rest_classify, rest_tei, rest_v1, rest_v2
from sentiserve.serve.auth import ApiKeys
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.edge import Edge, Route, error_reply
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.payloads import PayloadLog, PayloadLogConfig
from sentiserve.serve.plane import DataPlane, Limits
from sentiserve.serve.plane.embedded import EmbeddedPlane
from sentiserve.serve.plane.triton import TritonPlane
from sentiserve.serve.policy import Policy, TransportLimits, as_error
from sentiserve.serve.registry import Registry
from sentiserve.serve.rest_classify import ClassifyFormat
from sentiserve.serve.tracing import Tracing, TracingConfig


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
    transport: TransportLimits = field(default_factory=TransportLimits)
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    engine: str | None = None
    drain_seconds: float = 30.0
    api_key: str | None = None
    api_keys_file: Path | None = None
    """More keys, one per line, re-read on change or SIGHUP (see ``serve.auth``)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) for HTTPS and gRPC over TLS; with ``tls_key``."""
    tls_key: Path | None = None
    model_control: bool = False
    triton_url: str | None = None
    """Gateway mode: Triton's gRPC ``host:port``; no models are loaded here."""
    triton_model: str = DEFAULT_MODEL
    """Gateway mode: the Triton model whose readiness is this server's readiness."""
    classify_format: ClassifyFormat = ClassifyFormat.VLLM
    """How ``POST /classify`` answers (vLLM's shape or Infinity's)."""
    payload_log: PayloadLogConfig | None = None
    """Where sampled requests and answers are logged (None: nowhere)."""
    tracing: TracingConfig | None = None
    """Where request spans go (None: tracing off)."""
    rollouts: Mapping[str, Callable[[Rollout], Rollout]] = field(default_factory=dict)
    """Per model, the rollout it serves given its repository's (settings over the file)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key (--tls-cert, --tls-key)")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")


@dataclass
class Server:
    """A built server: the ASGI edge (in front of the FastAPI app), its data plane and the
    request policy that HTTP and gRPC share."""

    asgi: Edge
    app: FastAPI
    plane: DataPlane
    policy: Policy
    metrics: Metrics

    def stop_accepting(self) -> None:
        self.policy.accepting = False

    async def close(self) -> None:
        """Stop the plane (its batchers drain), then export the spans still queued."""
        await self.plane.close()
        await asyncio.to_thread(self.policy.tracing.close)


def _error(exc: BaseException) -> Response:
    """The policy's error answer (``{"error": ...}``, ``Retry-After`` when busy) for FastAPI."""
    reply = error_reply(as_error(exc))
    headers = {k.decode(): v.decode() for k, v in reply.headers}
    return Response(reply.body, reply.status, headers, media_type=reply.content_type.decode())


def build_app(
    plane: DataPlane, policy: Policy, classify_format: ClassifyFormat = ClassifyFormat.VLLM
) -> tuple[FastAPI, Edge]:
    """FastAPI (every route but inference, with the policy's error format) and the edge in
    front of it (the policy on HTTP, and inference)."""
    app = FastAPI(
        title="sentiserve",
        version=__version__,
        description="Text classification: friendly REST, KServe v2, and drop-in routes for "
        "TEI, Hugging Face Inference, vLLM and Infinity clients.",
    )

    @app.exception_handler(SentiserveError)
    async def sentiserve_error(_request: Request, exc: SentiserveError) -> Response:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return _error(InvalidInputError(validation_message(exc)))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    app.include_router(rest_v2.router(plane, policy))
    app.include_router(playground.router())
    app.include_router(rest_tei.info_router(plane, policy))
    inference = [
        rest_v1.route(plane),
        *rest_v2.infer_routes(plane),
        *rest_tei.routes(plane),
        *rest_classify.routes(plane, classify_format),
    ]
    app.openapi = lambda: _openapi(app, inference)  # type: ignore[method-assign]
    return app, Edge(app, inference, policy)


def _openapi(app: FastAPI, inference: list[Route]) -> dict[str, Any]:
    """FastAPI's document plus the edge-served inference routes', generated from their path
    templates and models."""
    if not app.openapi_schema:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        app.openapi_schema = openapi.extend(schema, inference)
    return app.openapi_schema


def build_plane(config: ServerConfig, metrics: Metrics) -> DataPlane:
    """The embedded plane (every model loaded, verified and warmed up), or in gateway mode
    (``triton_url`` set) the plane backed by Triton."""
    payloads = None if config.payload_log is None else PayloadLog(config.payload_log, metrics)
    if config.triton_url:
        return TritonPlane(
            config.triton_url,
            metrics,
            config.limits,
            readiness_model=config.triton_model,
            model_control=config.model_control,
            payloads=payloads,
        )
    registry = Registry(
        config.repository,
        config.batching,
        instances=config.instances,
        engine=config.engine,
        on_batch=metrics.record_batch,
        on_reference=metrics.set_reference,
        rollouts=config.rollouts,
    )
    plane = EmbeddedPlane(
        registry, metrics, config.limits, model_control=config.model_control, payloads=payloads
    )
    try:
        registry.load_all()
    except BaseException:
        if payloads is not None:
            payloads.close()
        raise
    return plane


def build_server(config: ServerConfig) -> Server:
    metrics = Metrics()
    keys = ApiKeys(config.api_key, config.api_keys_file)
    tracing = Tracing(
        config.tracing,
        on_dropped=lambda reason, n: metrics.trace_dropped.labels(reason).inc(n),
        on_exported=metrics.trace_exported.inc,
    )
    policy = Policy(keys, config.transport, metrics, tracing)
    plane = build_plane(config, metrics)
    app, edge = build_app(plane, policy, config.classify_format)
    return Server(edge, app, plane, policy, metrics)


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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it on Linux
        return None
    return uvloop.new_event_loop


def run(config: ServerConfig, on_ready: Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting, drain in-flight work, exit."""
    import uvicorn

    http_socket = bind(config.host, config.http_port, "HTTP")
    server = build_server(config)

    class Graceful(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Readiness goes false first; uvicorn then stops accepting connections and
            # waits (up to drain_seconds) for in-flight requests before it exits.
            server.stop_accepting()
            super().handle_exit(sig, frame)

    uv = Graceful(
        uvicorn.Config(
            server.asgi,
            host=config.host,
            port=config.http_port,
            log_level="warning",
            timeout_graceful_shutdown=int(config.drain_seconds),
            timeout_keep_alive=config.transport.keep_alive_s,
            lifespan="off",
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
        )
    )

    async def main() -> None:
        grpc_server = None
        try:
            if config.grpc_port is not None:
                from sentiserve.serve.grpc_v2 import start_grpc

                tls = None
                if config.tls_cert is not None and config.tls_key is not None:
                    tls = (config.tls_cert.read_bytes(), config.tls_key.read_bytes())
                try:
                    grpc_server = await start_grpc(
                        server.plane, server.policy, config.host, config.grpc_port, tls=tls
                    )
                except (OSError, RuntimeError) as exc:
                    raise bind_error("gRPC", config.host, config.grpc_port, exc) from exc
            # SIGHUP re-reads the API keys file (rotation without a restart).
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, server.policy.keys.reload)
            task = asyncio.create_task(uv.serve(sockets=[http_socket]))
            while not uv.started and not task.done():
                await asyncio.sleep(0.01)
            if uv.started:
                on_ready()
            await task
        finally:
            if grpc_server is not None:
                await grpc_server.stop(config.drain_seconds)
            await server.close()

    try:
        metrics_http = start_metrics_server(server.metrics, config.host, config.metrics_port)
    except OSError as exc:
        asyncio.run(server.close())
        raise bind_error("metrics", config.host, config.metrics_port, exc) from exc
    try:
        # uvloop: uvicorn picks it only in uvicorn.run(); serving ourselves, we ask for it.
        # Its C transports and loop cost less per request than asyncio's own.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        metrics_http.shutdown()
