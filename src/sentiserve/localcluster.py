"""A local rehearsal of scale-out: N ``sentiserve serve`` replicas behind HAProxy on
127.0.0.1, with active health checks on ``/v2/health/ready`` and retries on another replica
when one fails (connection refused, empty response, timeout, 503). ``make cluster-local``
runs it until Ctrl-C; the tests use it to kill a replica under load.

HAProxy (Debian's package) rather than open-source nginx: nginx only checks health
passively, so it keeps sending requests to a dead replica until they fail.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sentiserve.errors import ConfigError, SentiserveError

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


def is_ready(url: str) -> bool:
    """Whether the server at ``url`` answers ``/v2/health/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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
                    [
                        sys.executable,
                        "-m",
                        "sentiserve",
                        "serve",
                        "--model-repository",
                        self.repository,
                        "--http-port",
                        str(http),
                        "--grpc-port",
                        "0",
                        "--metrics-port",
                        str(free_port()),
                        *self.extra,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                self.replicas.append((proc, http))
            deadline = time.monotonic() + timeout_s
            for proc, http in self.replicas:
                while not is_ready(f"http://127.0.0.1:{http}"):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise ClusterError(f"replica on port {http} did not become ready")
                    time.sleep(0.1)
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
            while not is_ready(self.url):
                if self.balancer.poll() is not None or time.monotonic() > deadline:
                    raise ClusterError(f"haproxy did not start on {self.url}")
                time.sleep(0.1)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=1, help="engine threads per replica")
    args = parser.parse_args()
    cluster = LocalCluster(
        args.model_repository, args.replicas, args.port, extra=("--threads", str(args.threads))
    )
    try:
        cluster.start()
    except SentiserveError as exc:
        sys.exit(f"error: {exc}")
    ports = ", ".join(str(http) for _, http in cluster.replicas)
    sys.stderr.write(
        f"ready: {cluster.url}/v1/sentiment -> replicas on ports {ports}; Ctrl-C to stop\n"
    )
    signal.signal(signal.SIGTERM, lambda *_: cluster.stop())
    try:
        while cluster.balancer is not None and cluster.balancer.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
