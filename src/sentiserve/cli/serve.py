"""``sentiserve serve``: the embedded inference server."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, user_errors
from sentiserve.repository.layout import DEFAULT_ROOT
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.plane import Limits
from sentiserve.serve.policy import TransportLimits

B = BatchingConfig
L = Limits
T = TransportLimits


class Backend(StrEnum):
    EMBEDDED = "embedded"
    TRITON = "triton"


def serve(
    model_repository: str = typer.Option(
        str(DEFAULT_ROOT),
        envvar="SENTISERVE_MODEL_REPOSITORY",
        help="Model repository to serve: a folder, or s3://bucket/prefix (pulled and verified "
        "into the cache first; AWS_ENDPOINT_URL for S3-compatible stores).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 in containers)."),
    http_port: int = typer.Option(8000, help="REST port (friendly API and KServe v2)."),
    grpc_port: int = typer.Option(8001, help="KServe v2 gRPC port (0 turns gRPC off)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (/metrics)."),
    max_batch_size: int | None = typer.Option(
        None, help=f"Most texts per engine call (default: {B.max_batch_size} on CPU, 128 on GPU)."
    ),
    max_batch_tokens: int | None = typer.Option(
        None,
        help=f"Most padded tokens per call (default: {B.max_batch_tokens} on CPU, 16384 on GPU).",
    ),
    max_queue_delay_ms: float = typer.Option(
        B.max_queue_delay_ms, help="Longest wait for a batch."
    ),
    max_queue_size: int | None = typer.Option(
        None, help=f"Most queued texts before 503 (default: {B.max_queue_size}; 2048 on GPU)."
    ),
    group_by_length: bool = typer.Option(True, help="Batch texts of similar length together."),
    pad_to_multiple: int = typer.Option(
        B.pad_to_multiple, help="Round each batch's padded length up to a multiple of this."
    ),
    max_padding_tokens: int | None = typer.Option(
        None,
        min=0,
        help=f"With grouping: most padding tokens a batch may carry per text in it (default: "
        f"{B.max_padding_tokens} on CPU, 8 on GPU).",
    ),
    max_texts: int = typer.Option(L.max_texts, help="Most texts in one request (413 beyond)."),
    timeout_s: float = typer.Option(L.default_timeout_s, help="Default request deadline."),
    max_in_flight: int = typer.Option(
        T.max_in_flight,
        help="Most inference requests inside at once, HTTP and gRPC together (503 / "
        "UNAVAILABLE beyond, at once).",
    ),
    body_timeout_s: float = typer.Option(
        T.body_timeout_s, help="Longest an inference request's body may take to arrive (408)."
    ),
    keep_alive_s: int = typer.Option(
        T.keep_alive_s, help="Close a keep-alive connection idle this long."
    ),
    instances: int | None = typer.Option(
        None,
        min=1,
        help="Engine instances (each a worker with its own session, all taking from one "
        "queue). Default: one per core on CPU, one on a GPU.",
    ),
    intra_op_threads: int | None = typer.Option(
        None,
        "--intra-op-threads",
        "--threads",
        min=1,
        help="ONNX Runtime threads per instance (default: SENTISERVE_THREADS, else 1 on CPU "
        "with several instances, else every core).",
    ),
    solo_threads: int | None = typer.Option(
        None,
        min=0,
        help="Threads of the extra session that runs a lone request when every instance is "
        "idle (default: every core when instances use fewer; 0 turns it off).",
    ),
    engine: str | None = typer.Option(None, help="Engine variant (default: manifest's)."),
    model_control: bool = typer.Option(False, help="Allow loading/unloading models over the API."),
    api_keys_file: Path | None = typer.Option(
        None,
        help="API keys, one per line (# comments), all valid at once; re-read when the file "
        "changes or on SIGHUP. Default: SENTISERVE_API_KEYS_FILE. SENTISERVE_API_KEY adds one.",
    ),
    tls_cert: Path | None = typer.Option(
        None, help="PEM certificate (chain): serve HTTPS and gRPC over TLS (with --tls-key)."
    ),
    tls_key: Path | None = typer.Option(None, help="PEM private key of --tls-cert."),
    backend: Backend = typer.Option(
        Backend.EMBEDDED,
        envvar="SENTISERVE_BACKEND",
        help="embedded: run the models here. triton: the friendly API (auth, limits, "
        "metrics, playground) in front of a remote Triton over gRPC (--triton-url).",
    ),
    triton_url: str = typer.Option(
        "127.0.0.1:8001",
        envvar="SENTISERVE_TRITON_URL",
        help="Triton's gRPC target: host:port, dns:///host:port (every address the name "
        "resolves to, e.g. a headless Service) or ipv4:a:port,b:port; requests are spread "
        "round-robin.",
    ),
    triton_model: str = typer.Option(
        DEFAULT_MODEL,
        "--triton-model-name",
        help="With --backend triton: the model whose readiness is ours.",
    ),
) -> None:
    """Serve every model in the repository: friendly REST, KServe v2 REST and gRPC, metrics.

    With --backend triton: a gateway with the friendly API only (/v1/sentiment, /, health,
    metrics) in front of Triton, which serves KServe v2 itself; the repository is not read.
    """
    from sentiserve.engine.instances import InstanceConfig
    from sentiserve.repository.served import detect_device
    from sentiserve.repository.stores import open_repository
    from sentiserve.serve.app import ServerConfig, run

    settings = current_settings()
    gateway = backend is Backend.TRITON
    with user_errors():
        repository = Path(".")
        if not gateway:
            console.print(f"[cyan]•[/] model repository {model_repository}")
            store = open_repository(model_repository, settings.cache_dir)
            repository = store.local()
        config = ServerConfig(
            repository=repository,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port or None,
            metrics_port=metrics_port,
            engine=engine,
            instances=InstanceConfig(
                count=instances,
                threads=intra_op_threads or settings.threads,
                solo_threads=solo_threads,
            ),
            batching=BatchingConfig.for_device(
                detect_device() if not gateway else "cpu",
                max_batch_size=max_batch_size,
                max_batch_tokens=max_batch_tokens,
                max_queue_delay_ms=max_queue_delay_ms,
                max_queue_size=max_queue_size,
                group_by_length=group_by_length,
                max_padding_tokens=max_padding_tokens,
                pad_to_multiple=pad_to_multiple,
            ),
            limits=Limits(max_texts=max_texts, default_timeout_s=timeout_s),
            transport=TransportLimits(
                max_in_flight=max_in_flight,
                body_timeout_s=body_timeout_s,
                keep_alive_s=keep_alive_s,
            ),
            api_key=settings.api_key,
            api_keys_file=api_keys_file or settings.api_keys_file,
            tls_cert=tls_cert,
            tls_key=tls_key,
            model_control=model_control,
            triton_url=triton_url if gateway else None,
            triton_model=triton_model,
        )

        def ready() -> None:
            base = f"{'https' if tls_cert else 'http'}://{host}:{http_port}"
            metrics = f"http://{host}:{metrics_port}/metrics"
            if gateway:
                console.print(
                    f"[green]ready[/]: {base}/v1/sentiment  {base}/docs  metrics "
                    f"{metrics}  (gateway to Triton at {triton_url})",
                    soft_wrap=True,
                )
                return
            grpc = f"  gRPC {host}:{grpc_port}" if grpc_port else ""
            console.print(
                f"[green]ready[/]: {base}/v1/sentiment  {base}/v2  {base}/docs{grpc}  "
                f"metrics {metrics}",
                soft_wrap=True,
            )

        run(config, on_ready=ready)
