"""Start and stop `sentiserve serve` through its real CLI on free ports (shared by the
integration tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sentiserve.local.ready import free_port, is_ready, serve_command, wait_until


class Running:
    def __init__(self, proc: subprocess.Popen[str], http: int, grpc: int, metrics: int) -> None:
        self.proc, self.http_port, self.grpc_port, self.metrics_port = proc, http, grpc, metrics
        self.url = f"http://127.0.0.1:{http}"


def start_server(
    repo: Path | str, *extra: str, timeout: float = 60, env: dict[str, str] | None = None
) -> Running:
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        serve_command(repo, http, grpc, metrics, "--threads", "1", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SENTISERVE_LOG_LEVEL": "WARNING", **(env or {})},
    )
    running = Running(proc, http, grpc, metrics)

    def still_running() -> None:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server exited {proc.returncode}: {err[-2000:]}")

    if wait_until(lambda: is_ready(running.url), timeout, check=still_running):
        return running
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop(running: Running) -> None:
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(30)
        except subprocess.TimeoutExpired:
            running.proc.kill()


def bytes_tensor(items: list[bytes]) -> bytes:
    """A BYTES tensor's wire bytes, encoded by tritonclient (not by the code under test)."""
    import numpy as np
    from tritonclient.utils import serialize_byte_tensor

    if not items:
        return b""
    return bytes(serialize_byte_tensor(np.array(items, dtype=np.object_)).item())


@contextlib.asynccontextmanager
async def in_process(repository: Path, **config: Any) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The real server built in this process over ``repository`` (one instance, one thread;
    ``config``: more ServerConfig fields): its ``Server``, an httpx client on its ASGI app,
    and a gRPC stub on the real gRPC server on a loopback port."""
    import grpc
    import httpx
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from sentiserve.engine.instances import InstanceConfig
    from sentiserve.serve.app import ServerConfig, build_server
    from sentiserve.serve.grpc_v2 import grpc_server

    instances = InstanceConfig(count=1, threads=1, solo_threads=0)
    server = build_server(ServerConfig(repository=repository, instances=instances, **config))
    rpc = grpc_server(server.plane, server.policy)
    port = rpc.add_insecure_port("127.0.0.1:0")
    await rpc.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        transport = httpx.ASGITransport(app=server.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield server, http, pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await rpc.stop(None)
        await server.close()
