"""Start and stop `sentiserve serve` through its real CLI on free ports (shared by the
integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

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
