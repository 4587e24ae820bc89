"""Start and stop `sentiserve serve` through its real CLI on free ports (shared by the
integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sentiserve.localcluster import free_port


class Running:
    def __init__(self, proc: subprocess.Popen[str], http: int, grpc: int, metrics: int) -> None:
        self.proc, self.http_port, self.grpc_port, self.metrics_port = proc, http, grpc, metrics
        self.url = f"http://127.0.0.1:{http}"


def start_server(
    repo: Path | str, *extra: str, timeout: float = 60, env: dict[str, str] | None = None
) -> Running:
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--threads",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SENTISERVE_LOG_LEVEL": "WARNING", **(env or {})},
    )
    running = Running(proc, http, grpc, metrics)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server exited {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(f"{running.url}/v2/health/ready", timeout=1).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop(running: Running) -> None:
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(30)
        except subprocess.TimeoutExpired:
            running.proc.kill()
