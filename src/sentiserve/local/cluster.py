"""A local rehearsal of scale-out: N ``sentiserve serve`` replicas behind HAProxy on
127.0.0.1, with active health checks on ``/v2/health/ready`` and retries on another replica
when one fails (connection refused, empty response, timeout, 503). ``sentiserve cluster-local``
runs it until Ctrl-C; the tests use it to kill a replica under load.

HAProxy (Debian's package) rather than open-source nginx: nginx only checks health
passively, so it keeps sending requests to a dead replica until they fail.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sentiserve.errors import ConfigError, SentiserveError
from sentiserve.local.ready import free_port, is_ready, serve_command, wait_until

HAPROXY_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    # Requests are buffered, so a failed one can be sent again to another replica.
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503

frontend api
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""


class ClusterError(SentiserveError):
    """A replica or the load balancer did not start."""


class LocalCluster:
    """Replicas on free ports plus HAProxy on ``port``; ``stop()`` ends every process."""

    def __init__(
        self,
        repository: str,
        replicas: int = 3,
        port: int = 8080,
        workdir: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        if replicas < 1:
            raise ConfigError("at least one replica")
        if shutil.which("haproxy") is None:
            raise ClusterError("haproxy not found (Debian: apt-get install haproxy)")
        self.repository, self.count, self.port, self.extra = repository, replicas, port, extra
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sentiserve-cluster-"))
        self.url = f"http://127.0.0.1:{port}"
        self.replicas: list[tuple[subprocess.Popen[bytes], int]] = []
        self.balancer: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> LocalCluster:
        try:
            for _ in range(self.count):
                http = free_port()
                proc = subprocess.Popen(
                    serve_command(self.repository, http, 0, free_port(), *self.extra),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                self.replicas.append((proc, http))
            deadline = time.monotonic() + timeout_s
            for proc, http in self.replicas:

                def alive(proc: subprocess.Popen[bytes] = proc, http: int = http) -> None:
                    if proc.poll() is not None:
                        raise ClusterError(f"replica on port {http} exited while starting")

                url = f"http://127.0.0.1:{http}"
                left = deadline - time.monotonic()
                if not wait_until(functools.partial(is_ready, url), left, check=alive):
                    raise ClusterError(f"replica on port {http} did not become ready")
            servers = "\n".join(
                f"    server r{i} 127.0.0.1:{http} check"
                for i, (_, http) in enumerate(self.replicas)
            )
            config = self.workdir / "haproxy.cfg"
            config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
            check = subprocess.run(
                ["haproxy", "-c", "-q", "-f", str(config)], capture_output=True, text=True
            )
            if check.returncode != 0:
                raise ClusterError(f"haproxy rejected its configuration: {check.stderr}")
            self.balancer = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            balancer = self.balancer

            def balancing() -> None:
                if balancer.poll() is not None:
                    raise ClusterError(f"haproxy exited while starting on {self.url}")

            left = deadline - time.monotonic()
            if not wait_until(lambda: is_ready(self.url), left, check=balancing):
                raise ClusterError(f"haproxy did not start on {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        """SIGKILL one replica: no drain, as when a node dies."""
        self.replicas[index][0].kill()

    def stop(self) -> None:
        procs = [p for p, _ in self.replicas] + ([self.balancer] if self.balancer else [])
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
