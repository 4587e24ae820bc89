"""Ports and readiness on this machine: a free port to start a server on, the command that
starts one, whether a server is ready, and one way to wait for a condition (instead of
hand-written polling loops)."""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, and not handed out before by this process (the kernel
    may give the same ephemeral port to two binds in a row once the first is closed)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def serve_command(
    repository: str | Path,
    http: int | str,
    grpc: int | str,
    metrics: int | str,
    *extra: str,
    command: str = "serve",
) -> list[str]:
    """``sentiserve serve`` (or ``command``: ``triton`` takes the same options) under this
    interpreter on 127.0.0.1 with these ports (grpc 0: off), then ``extra`` options."""
    return [
        sys.executable,
        "-m",
        "sentiserve",
        command,
        "--model-repository",
        str(repository),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        *extra,
    ]


def is_ready(url: str) -> bool:
    """Whether the server at ``url`` answers ``/v2/health/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    *,
    interval_s: float = 0.05,
    check: Callable[[], None] = lambda: None,
) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False).

    ``check`` runs before each poll and raises to stop early (say, because the process being
    waited for has exited).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
