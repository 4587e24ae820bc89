"""``sentiserve serve``: the embedded inference server (or the gateway in front of Triton).

The options only override fields of the one settings object
(:class:`~sentiserve.serve.settings.ServeSettings`): their help and defaults come from it,
and so do the settings file (``--config``) and the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sentiserve.cli.console import console, current_settings, user_errors
from sentiserve.serve.rest_classify import ClassifyFormat
from sentiserve.serve.settings import Backend, ServeSettings, describe

FIELDS = {
    "model_repository": "model_repository",
    "host": "host",
    "http_port": "http.port",
    "grpc_port": "grpc.port",
    "metrics_port": "metrics.port",
    "max_batch_size": "batching.max_batch_size",
    "max_batch_tokens": "batching.max_batch_tokens",
    "max_queue_delay_ms": "batching.max_queue_delay_ms",
    "max_queue_size": "batching.max_queue_size",
    "group_by_length": "batching.group_by_length",
    "pad_to_multiple": "batching.pad_to_multiple",
    "max_padding_tokens": "batching.max_padding_tokens",
    "batch_window": "batching.batch_window",
    "max_texts": "limits.max_texts",
    "timeout_s": "limits.timeout_s",
    "max_in_flight": "limits.max_in_flight",
    "body_timeout_s": "http.body_timeout_s",
    "keep_alive_s": "http.keep_alive_s",
    "classify_format": "http.classify_format",
    "drain_s": "drain_s",
    "instances": "instances.count",
    "intra_op_threads": "instances.threads",
    "solo_threads": "instances.solo_threads",
    "engine": "engine",
    "model_control": "model_control",
    "api_keys_file": "auth.api_keys_file",
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "backend": "gateway.backend",
    "triton_url": "gateway.triton_url",
    "triton_model": "gateway.triton_model_name",
    "payload_log": "payload_log.target",
    "payload_log_sample": "payload_log.sample",
    "payload_log_redact": "payload_log.redact",
    "payload_log_format": "payload_log.format",
    "payload_log_batch": "payload_log.batch",
    "version_policy": "rollout.policy",
    "split": "rollout.split",
    "shadow": "rollout.shadow",
    "rollout_model": "rollout.model",
    "otlp_endpoint": "tracing.otlp_endpoint",
    "otlp_service_name": "tracing.service_name",
    "trace_sample": "tracing.sample",
}
"""Each option's field in the settings object."""


def overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, nested as the settings object is."""
    nested: dict[str, Any] = {}
    for name, value in params.items():
        if name not in FIELDS or value is None:
            continue
        *sections, field = FIELDS[name].split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = value
    return nested


def _opt(name: str, *flags: str, **kwargs: Any) -> Any:
    """The option of parameter ``name``: no default of its own (an unset option overrides
    nothing), its help and default text from the settings field it overrides."""
    return typer.Option(None, *flags, help=describe(FIELDS[name]), show_default=False, **kwargs)


def serve(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Settings file (YAML, JSON or TOML, nested as the settings: http, grpc, limits, "
        "batching, instances, auth, tls, gateway, payload_log, rollout, tracing); options and "
        "SENTISERVE_* override it.",
    ),
    model_repository: str | None = _opt("model_repository"),
    host: str | None = _opt("host"),
    http_port: int | None = _opt("http_port"),
    grpc_port: int | None = _opt("grpc_port"),
    metrics_port: int | None = _opt("metrics_port"),
    max_batch_size: int | None = _opt("max_batch_size"),
    max_batch_tokens: int | None = _opt("max_batch_tokens"),
    max_queue_delay_ms: float | None = _opt("max_queue_delay_ms"),
    max_queue_size: int | None = _opt("max_queue_size"),
    group_by_length: bool | None = _opt(
        "group_by_length", "--group-by-length/--no-group-by-length"
    ),
    pad_to_multiple: int | None = _opt("pad_to_multiple"),
    max_padding_tokens: int | None = _opt("max_padding_tokens", min=0),
    batch_window: int | None = _opt("batch_window", min=0),
    max_texts: int | None = _opt("max_texts"),
    timeout_s: float | None = _opt("timeout_s"),
    max_in_flight: int | None = _opt("max_in_flight"),
    body_timeout_s: float | None = _opt("body_timeout_s"),
    keep_alive_s: int | None = _opt("keep_alive_s"),
    classify_format: ClassifyFormat | None = _opt("classify_format"),
    drain_s: float | None = _opt("drain_s"),
    instances: int | None = _opt("instances", min=1),
    intra_op_threads: int | None = _opt(
        "intra_op_threads", "--intra-op-threads", "--threads", min=1
    ),
    solo_threads: int | None = _opt("solo_threads", min=0),
    engine: str | None = _opt("engine"),
    model_control: bool | None = _opt("model_control", "--model-control/--no-model-control"),
    api_keys_file: Path | None = _opt("api_keys_file"),
    tls_cert: Path | None = _opt("tls_cert"),
    tls_key: Path | None = _opt("tls_key"),
    backend: Backend | None = _opt("backend"),
    triton_url: str | None = _opt("triton_url"),
    triton_model: str | None = _opt("triton_model", "--triton-model-name"),
    payload_log: str | None = _opt("payload_log", "--payload-log", metavar="TARGET"),
    payload_log_sample: float | None = _opt("payload_log_sample", min=0.0, max=1.0),
    payload_log_redact: bool | None = _opt(
        "payload_log_redact", "--payload-log-redact/--no-payload-log-redact"
    ),
    payload_log_format: str | None = _opt("payload_log_format"),
    payload_log_batch: bool | None = _opt(
        "payload_log_batch", "--payload-log-batch/--no-payload-log-batch"
    ),
    rollout_model: str | None = _opt("rollout_model", "--rollout-model-name"),
    version_policy: str | None = _opt("version_policy", "--version-policy"),
    split: str | None = _opt("split", "--split", metavar="V=W,..."),
    shadow: int | None = _opt("shadow", "--shadow", min=0, metavar="VERSION"),
    otlp_endpoint: str | None = _opt("otlp_endpoint", "--otlp-endpoint", metavar="URL"),
    otlp_service_name: str | None = _opt("otlp_service_name", "--otlp-service-name"),
    trace_sample: float | None = _opt("trace_sample", "--trace-sample", min=0.0, max=1.0),
) -> None:
    """Serve every model in the repository: friendly REST, KServe v2 REST and gRPC, metrics.

    With --backend triton: a gateway in front of Triton (friendly API, KServe v2 REST and
    gRPC forwarded over gRPC); the repository is not read.
    """
    from sentiserve.repository.served import detect_device
    from sentiserve.repository.stores import open_repository
    from sentiserve.serve.app import run

    with user_errors():
        settings = ServeSettings.load(config, **overrides(ctx.params))
        repository, device = Path("."), "cpu"
        if not settings.gateway_mode:
            console.print(f"[cyan]•[/] model repository {settings.model_repository}")
            store = open_repository(settings.model_repository, current_settings().cache_dir)
            repository, device = store.local(), detect_device()
        server = settings.server_config(repository, device)
        run(server, on_ready=lambda: announce(settings))


def announce(settings: ServeSettings) -> None:
    """The ready line: where everything is served."""
    host = settings.host
    base = f"{'https' if settings.tls.cert else 'http'}://{host}:{settings.http.port}"
    metrics = f"http://{host}:{settings.metrics.port}/metrics"
    grpc = f"  gRPC {host}:{settings.grpc.port}" if settings.grpc.port else ""
    where = f"  (gateway to Triton at {settings.gateway.triton_url})"
    console.print(
        f"[green]ready[/]: {base}/v1/sentiment  {base}/v2  {base}/docs{grpc}  metrics "
        f"{metrics}{where if settings.gateway_mode else ''}",
        soft_wrap=True,
    )
