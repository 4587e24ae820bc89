"""Ports and readiness on this machine: a free port to start a server on, the command that
starts one, whether a server is ready, and one way to wait for a condition (instead of
hand-written polling loops)."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 8192  # ports below the kernel's ephemeral range that free_port walks through
_handed_out = 0


def _ephemeral_floor() -> int:
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free on 127.0.0.1 now, chosen below the kernel's ephemeral range.

    A port the kernel hands to ``bind(0)`` comes from that range, which outgoing connections
    draw from too: between picking it and the server binding it, any client on the machine may
    take it as its local port. Below the range only a listener can take a port, so each
    process walks the stretch from its own point (derived from its pid) and returns the next
    port that binds."""
    global _handed_out
    top = _ephemeral_floor()
    bottom = max(1024, top - _SPAN)
    span = top - bottom
    if span < 256:  # an unusual range that leaves no room below it: the kernel's pick
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    start = (os.getpid() * 2654435761) % span  # spreads neighbouring pids apart
    for _ in range(span):
        port = bottom + (start + _handed_out) % span
        _handed_out += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port in {bottom}-{top - 1} on 127.0.0.1")


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
