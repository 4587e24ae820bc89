"""Running the bundled ``tritonserver`` as a child process, and stopping it cleanly.

Ready means Triton's own ``/v2/health/ready`` answers 200 (with ``--strict-readiness``, only
once every model loaded). Stopping sends SIGTERM to ``tritonserver`` itself (not to a parent:
a signal to PyTriton's parent process can orphan it), waits for its graceful exit, then kills
its whole process group (the python stubs included) if it hangs. Each server names its
python backend's shared memory regions in ``/dev/shm`` with a prefix of its own
(``shm-region-prefix-name``), so that what one server left behind is removed when it stops
without touching the regions of another Triton on the same machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from sentiserve.local.ready import is_ready, wait_until
from sentiserve.triton.environment import TritonEnvironment, TritonUnavailableError

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region"


def shm_regions(prefix: str) -> set[str]:
    """The names of the shared memory regions in ``/dev/shm`` that start with ``prefix``."""
    try:
        return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)}
    except OSError:
        return set()


@dataclass
class TritonServer:
    """One ``tritonserver`` over a model repository (a folder or ``s3://bucket/prefix``).

    Args:
        environment: Where the binary and the stub's packages are.
        repository: What Triton's ``--model-repository`` gets.
        host: Address the HTTP, gRPC and metrics endpoints bind.
        model_control_mode: ``none`` (load everything), ``poll`` or ``explicit``.
        load_models: With ``explicit``, the models to load at start.
        exit_timeout: Seconds Triton waits for in-flight requests and open client
            connections when stopping (whatever is left is then killed and cleaned up).
        log_file: Where Triton's output goes (default: inherited stdout/stderr).
    """

    environment: TritonEnvironment
    repository: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_control_mode: str = "none"
    load_models: Sequence[str] = ()
    log_verbose: int = 0
    exit_timeout: int = 10
    log_file: Path | None = None
    extra_args: Sequence[str] = ()
    otlp_url: str | None = None
    """Triton's own OpenTelemetry tracing to this OTLP/HTTP receiver (``.../v1/traces``),
    every request, continuing the caller's ``traceparent`` (None: off)."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    shm_prefix: str = field(
        default_factory=lambda: f"{SHM_PREFIX}_{uuid.uuid4().hex[:12]}_", init=False
    )
    """This server's python backend shared memory regions start with it (and only its)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        args = [
            str(self.environment.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.environment.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            f"--model-control-mode={self.model_control_mode}",
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        if self.otlp_url:
            args += trace_args(self.otlp_url)
        return [*args, *self.extra_args]

    def start(self, timeout: float = 180.0) -> None:
        """Start and wait until Triton says it is ready.

        Raises:
            TritonUnavailableError: The environment is missing, or Triton exited or did
                not become ready in time (with the end of its log when there is one).
        """
        if not self.environment.ready():
            raise TritonUnavailableError(
                f"Triton's environment in {self.environment.home} is missing or outdated; "
                "run `sentiserve triton --setup-only` (or `make triton`) first"
            )
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                self.command(),
                env=self.environment.process_env(),
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        process = self._process

        def alive() -> None:
            code = process.poll()
            if code is not None:
                self._cleanup_shm()
                raise TritonUnavailableError(
                    f"tritonserver exited with {code} while starting{self._log_tail()}"
                )

        if wait_until(lambda: is_ready(self.url), timeout, interval_s=0.2, check=alive):
            logger.info("Triton ready at %s (gRPC %s)", self.url, self.grpc_url)
            return
        self.stop()
        raise TritonUnavailableError(f"Triton not ready after {timeout:.0f} s{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_file is None or not self.log_file.is_file():
            return ""
        lines = self.log_file.read_text(errors="replace").splitlines()[-20:]
        return ":\n" + "\n".join(lines)

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to tritonserver, then SIGKILL to its process group after ``grace`` s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver ignored SIGTERM for %.0f s; killing it", grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stubs left behind by a hung server
        process.wait()
        self._cleanup_shm()

    def _cleanup_shm(self) -> None:
        for name in shm_regions(self.shm_prefix):
            logger.warning("removing shared memory left by Triton: /dev/shm/%s", name)
            (SHM / name).unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def trace_args(url: str, rate: int = 1, service: str = "triton") -> list[str]:
    """Triton's options for OpenTelemetry tracing to an OTLP/HTTP ``url``: one request in
    ``rate`` traced, at timestamp level, under ``service.name`` ``service``. Triton reads a
    request's ``traceparent`` (HTTP header or gRPC metadata), so its spans join the caller's
    trace."""
    return [
        "--trace-config=mode=opentelemetry",
        f"--trace-config=rate={rate}",
        "--trace-config=level=TIMESTAMPS",
        f"--trace-config=opentelemetry,url={url}",
        f"--trace-config=opentelemetry,resource=service.name={service}",
    ]
