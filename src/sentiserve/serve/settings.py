"""The one settings object of ``sentiserve serve``.

Every serving setting is a field of :class:`ServeSettings`, in nested sections (``http``,
``grpc``, ``metrics``, ``limits``, ``batching``, ``instances``, ``auth``, ``tls``,
``gateway``, ``payload_log``, ``rollout``, ``tracing``), each with its default and
description here and nowhere else. Values come from, lowest to highest precedence:

1. the defaults below (device-dependent ones, such as the GPU batch sizes, are left unset
   here and filled in one place, :meth:`ServeSettings.server_config`);
2. a settings file (``sentiserve serve --config FILE``: YAML, JSON or TOML, the same nesting);
3. the environment: ``SENTISERVE_<FIELD>`` at the top level, ``SENTISERVE_<SECTION>__<FIELD>``
   inside a section (``SENTISERVE_LIMITS__MAX_IN_FLIGHT=64``), plus the short names that
   came first (``SENTISERVE_BACKEND``, ``SENTISERVE_TRITON_URL``, ``SENTISERVE_API_KEY``,
   ``SENTISERVE_API_KEYS_FILE``, ``SENTISERVE_THREADS``);
4. command-line options, which only override fields.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sentiserve import DEFAULT_MODEL
from sentiserve.engine.instances import InstanceConfig
from sentiserve.errors import ConfigError, validation_message
from sentiserve.repository.rollout import Rollout, VersionPolicy, parse_split
from sentiserve.serve.batcher import BatchingConfig
from sentiserve.serve.payloads import PayloadLogConfig
from sentiserve.serve.plane import Limits
from sentiserve.serve.policy import TransportLimits
from sentiserve.serve.rest_classify import ClassifyFormat
from sentiserve.serve.tracing import TracingConfig

if TYPE_CHECKING:
    from sentiserve.serve.app import ServerConfig

_B, _L, _T = BatchingConfig, Limits, TransportLimits


class Backend(StrEnum):
    EMBEDDED = "embedded"
    TRITON = "triton"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    port: int = Field(
        default=8000, ge=1, le=65535, description="REST port (friendly API and KServe v2)."
    )
    max_body_bytes: int = Field(
        default=_T.max_body_bytes, ge=1, description="Largest request body (gRPC: message)."
    )
    body_timeout_s: float = Field(
        default=_T.body_timeout_s,
        gt=0,
        description="Longest an inference request's body may take (408).",
    )
    keep_alive_s: int = Field(
        default=_T.keep_alive_s, gt=0, description="Close a keep-alive connection idle this long."
    )
    classify_format: ClassifyFormat = Field(
        default=ClassifyFormat.VLLM,
        description="How POST /classify answers: as vLLM and SGLang do, or as Infinity does.",
    )


class GrpcSettings(_Section):
    port: int = Field(
        default=8001, ge=0, le=65535, description="KServe v2 gRPC port (0 turns gRPC off)."
    )


class MetricsSettings(_Section):
    port: int = Field(
        default=8002, ge=1, le=65535, description="Prometheus metrics port (/metrics)."
    )


class LimitsSettings(_Section):
    max_texts: int = Field(
        default=_L.max_texts, ge=1, description="Most texts in one request (413)."
    )
    timeout_s: float = Field(
        default=_L.default_timeout_s, gt=0, description="Default request deadline."
    )
    max_timeout_s: float = Field(
        default=_L.max_timeout_s,
        gt=0,
        description="Longest deadline a request gets (longer is cut).",
    )
    max_in_flight: int = Field(
        default=_T.max_in_flight,
        ge=1,
        description="Most inference requests inside at once, HTTP and gRPC together (503 / "
        "UNAVAILABLE beyond, at once).",
    )


class BatchingSettings(_Section):
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description=f"Most texts per engine call ({_B.max_batch_size} on CPU, 128 on GPU).",
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description=f"Most padded tokens per call ({_B.max_batch_tokens} on CPU, 16384 on GPU).",
    )
    max_queue_delay_ms: float = Field(
        default=_B.max_queue_delay_ms, ge=0, description="Longest the oldest queued text waits."
    )
    max_queue_size: int | None = Field(
        default=None,
        ge=1,
        description=f"Most queued texts before 503 ({_B.max_queue_size}; 2048 on GPU).",
    )
    group_by_length: bool = Field(
        default=True, description="Batch texts of similar length together."
    )
    max_padding_tokens: int | None = Field(
        default=None,
        ge=0,
        description="With grouping: most padding tokens a batch may carry per text in it "
        f"({_B.max_padding_tokens} on CPU, 8 on GPU).",
    )
    pad_to_multiple: int = Field(
        default=_B.pad_to_multiple,
        ge=1,
        description="Round a batch's padded length up to a multiple.",
    )
    batch_window: int = Field(
        default=_B.batch_window,
        ge=0,
        description="Cut each batch from this many of the oldest queued texts (0: all): "
        "bounds how far newer texts overtake older ones; a shorter latency tail under "
        "overload for some throughput (8, at 32-128 clients: p99 0.6-0.75x, for 0.85-0.98x "
        "the throughput).",
    )


class InstancesSettings(_Section):
    count: int | None = Field(
        default=None,
        ge=1,
        description="Engine instances (each a worker thread, all taking from one queue; "
        "one-thread CPU instances share one ONNX Runtime session, others get one each). "
        "Default: one per core on CPU, one on a GPU.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="ONNX Runtime threads per instance (default: 1 on CPU with several "
        "instances, else every core).",
    )
    solo_threads: int | None = Field(
        default=None,
        ge=0,
        description="Threads of the extra session that runs a lone request when every "
        "instance is idle (default: every core when instances use fewer; 0 turns it off).",
    )


class AuthSettings(_Section):
    api_key: str | None = Field(default=None, min_length=8, description="One API key.")
    api_keys_file: Path | None = Field(
        default=None,
        description="API keys, one per line (# comments), all valid at once; re-read when "
        "the file changes or on SIGHUP.",
    )


class TlsSettings(_Section):
    cert: Path | None = Field(
        default=None, description="PEM certificate (chain): serve HTTPS and gRPC over TLS."
    )
    key: Path | None = Field(default=None, description="PEM private key of the certificate.")


class GatewaySettings(_Section):
    backend: Backend = Field(
        default=Backend.EMBEDDED,
        description="embedded: run the models here. triton: a gateway in front of a remote "
        "Triton over gRPC (triton_url).",
    )
    triton_url: str = Field(
        default="127.0.0.1:8001",
        description="Triton's gRPC target: host:port, dns:///host:port (every address the "
        "name resolves to, e.g. a headless Service) or ipv4:a:port,b:port; requests are "
        "spread round-robin.",
    )
    triton_model_name: str = Field(
        default=DEFAULT_MODEL, description="Gateway mode: the Triton model whose readiness is ours."
    )


class PayloadLogSettings(_Section):
    target: str | None = Field(
        default=None,
        description="Log sampled requests and answers as CloudEvents to an http(s):// sink, "
        "or as JSON Lines files to s3://bucket/prefix or a folder (off when unset).",
    )
    sample: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests the payload log keeps."
    )
    redact: bool = Field(
        default=False, description="Payload log: each text's sha256 instead of the text."
    )
    queue_size: int = Field(
        default=20_000,
        ge=1,
        description="Payload log events waiting for the sink; beyond, new ones are dropped "
        "and counted, never waited for.",
    )
    batch: bool = Field(
        default=False,
        description="An http(s) payload sink gets each batch as one POST (CloudEvents' "
        "batched content mode) instead of one POST per event (KServe's logger).",
    )
    format: str = Field(
        default="jsonl",
        description="Payload log files and S3 objects as jsonl (JSON Lines) or parquet "
        "(needs pyarrow).",
    )


class TracingSettings(_Section):
    otlp_endpoint: str | None = Field(
        default=None,
        description="Send OpenTelemetry spans of inference requests to this OTLP receiver "
        "(http://collector:4317 over gRPC; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for "
        "http://collector:4318). Unset: OTEL_EXPORTER_OTLP_ENDPOINT, else tracing is off.",
    )
    service_name: str | None = Field(
        default=None,
        description="The service.name of the spans (unset: OTEL_SERVICE_NAME, else sentiserve).",
    )
    sample: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of new traces recorded; a caller's traceparent decides for its "
        "own (unset: OTEL_TRACES_SAMPLER_ARG, else 1).",
    )


class RolloutSettings(_Section):
    model: str = Field(
        default=DEFAULT_MODEL, description="The model the rollout settings below apply to."
    )
    policy: str | None = Field(
        default=None,
        description="Versions to serve: latest[:N], specific:A,B or all (unset: the "
        "repository's config.pbtxt decides, as for every other model).",
    )
    split: str | None = Field(
        default=None,
        description="Weights of the versions answering requests that name none, such as "
        "3=90,4=10 (unset: the repository's; empty: the newest version alone).",
    )
    shadow: int | None = Field(
        default=None,
        ge=0,
        description="A version that gets a copy of those requests, only to compare its "
        "answers (unset: the repository's; 0: none).",
    )

    def rollout(self, repository: Rollout) -> Rollout:
        """The repository's rollout with these settings over it."""
        return Rollout(
            VersionPolicy.parse(self.policy) if self.policy else repository.policy,
            parse_split(self.split) if self.split is not None else repository.split,
            repository.shadow if self.shadow is None else (self.shadow or None),
        )

    @property
    def overrides(self) -> bool:
        return self.policy is not None or self.split is not None or self.shadow is not None


SHORT_ENV = {
    "SENTISERVE_BACKEND": ("gateway", "backend"),
    "SENTISERVE_TRITON_URL": ("gateway", "triton_url"),
    "SENTISERVE_API_KEY": ("auth", "api_key"),
    "SENTISERVE_API_KEYS_FILE": ("auth", "api_keys_file"),
    "SENTISERVE_THREADS": ("instances", "threads"),
}
"""Environment names that came before the nested ones, still read (below the nested ones)."""

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("serve_config_file", default=None)


def read_settings_file(path: Path) -> dict[str, Any]:
    """A settings file's values: YAML (``.yaml``/``.yml``), JSON or TOML, one mapping.

    Raises:
        ConfigError: The file cannot be read or parsed, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
        suffix = path.suffix.lower()
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: a settings file is .yaml, .yml, .json or .toml")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the settings file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the settings file must hold one mapping of settings")
    return data


class _FileSource(PydanticBaseSettingsSource):
    """The ``--config`` file, if one was given to :meth:`ServeSettings.load`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # whole file at once, in __call__

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get()
        return read_settings_file(path) if path is not None else {}


class _ShortEnvSource(PydanticBaseSettingsSource):
    """The short environment names of :data:`SHORT_ENV`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, (section, key) in SHORT_ENV.items():
            value = os.environ.get(name)
            if value:
                values.setdefault(section, {})[key] = value
        return values


class ServeSettings(BaseSettings):
    """Everything ``sentiserve serve`` is configured with (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="SENTISERVE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    model_repository: str = Field(
        default="model_repository",
        description="Model repository to serve: a folder, or s3://bucket/prefix (pulled and "
        "verified into the cache first; AWS_ENDPOINT_URL for S3-compatible stores).",
    )
    host: str = Field(default="127.0.0.1", description="Address to bind (0.0.0.0 in containers).")
    engine: str | None = Field(
        default=None, description="Engine variant (default: the manifest's)."
    )
    model_control: bool = Field(
        default=False, description="Allow loading/unloading models over the API."
    )
    drain_s: float = Field(
        default=30.0, gt=0, description="Longest SIGTERM waits for in-flight requests."
    )
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings()
    metrics: MetricsSettings = MetricsSettings()
    limits: LimitsSettings = LimitsSettings()
    batching: BatchingSettings = BatchingSettings()
    instances: InstancesSettings = InstancesSettings()
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    gateway: GatewaySettings = GatewaySettings()
    payload_log: PayloadLogSettings = PayloadLogSettings()
    rollout: RolloutSettings = RolloutSettings()
    tracing: TracingSettings = TracingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _ShortEnvSource(settings_cls),
            _FileSource(settings_cls),
        )

    @classmethod
    def load(cls, file: Path | None = None, **overrides: Any) -> ServeSettings:
        """Defaults < ``file`` < environment < ``overrides`` (nested dicts per section).

        Raises:
            ConfigError: A value is invalid (one line naming the setting), or the file is.
        """
        token = _CONFIG_FILE.set(file)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(f"invalid setting {validation_message(exc)}") from exc
        finally:
            _CONFIG_FILE.reset(token)

    @property
    def gateway_mode(self) -> bool:
        return self.gateway.backend is Backend.TRITON

    def server_config(self, repository: Path, device: str) -> ServerConfig:
        """The server's runtime configuration, with the defaults for ``device`` (``cpu`` or
        ``cuda``) applied here, in one place.

        Args:
            repository: The local repository folder (an ``s3://`` one already pulled).
        """
        from sentiserve.serve.app import ServerConfig

        b, lim, h = self.batching, self.limits, self.http
        return ServerConfig(
            repository=repository,
            host=self.host,
            http_port=h.port,
            grpc_port=self.grpc.port or None,
            metrics_port=self.metrics.port,
            engine=self.engine,
            instances=InstanceConfig(
                count=self.instances.count,
                threads=self.instances.threads,
                solo_threads=self.instances.solo_threads,
            ),
            batching=BatchingConfig.for_device(
                "cpu" if self.gateway_mode else device,
                max_batch_size=b.max_batch_size,
                max_batch_tokens=b.max_batch_tokens,
                max_queue_delay_ms=b.max_queue_delay_ms,
                max_queue_size=b.max_queue_size,
                group_by_length=b.group_by_length,
                max_padding_tokens=b.max_padding_tokens,
                pad_to_multiple=b.pad_to_multiple,
                batch_window=b.batch_window,
            ),
            limits=Limits(
                max_texts=lim.max_texts,
                default_timeout_s=lim.timeout_s,
                max_timeout_s=lim.max_timeout_s,
            ),
            transport=TransportLimits(
                max_in_flight=lim.max_in_flight,
                max_body_bytes=h.max_body_bytes,
                body_timeout_s=h.body_timeout_s,
                keep_alive_s=h.keep_alive_s,
            ),
            drain_seconds=self.drain_s,
            classify_format=h.classify_format,
            api_key=self.auth.api_key,
            api_keys_file=self.auth.api_keys_file,
            tls_cert=self.tls.cert,
            tls_key=self.tls.key,
            model_control=self.model_control,
            triton_url=self.gateway.triton_url if self.gateway_mode else None,
            triton_model=self.gateway.triton_model_name,
            payload_log=None
            if self.payload_log.target is None
            else PayloadLogConfig(
                self.payload_log.target,
                sample=self.payload_log.sample,
                redact=self.payload_log.redact,
                queue_size=self.payload_log.queue_size,
                format=self.payload_log.format,
                batch=self.payload_log.batch,
            ),
            rollouts={self.rollout.model: self.rollout.rollout} if self.rollout.overrides else {},
            tracing=TracingConfig.resolve(
                self.tracing.otlp_endpoint, self.tracing.service_name, self.tracing.sample
            ),
        )


def describe(path: str) -> str:
    """A field's description and default, for ``--help`` (``path``: ``"limits.timeout_s"``)."""
    model: type[BaseModel] = ServeSettings
    *sections, name = path.split(".")
    for section in sections:
        annotation = model.model_fields[section].annotation
        assert isinstance(annotation, type)
        assert issubclass(annotation, BaseModel)
        model = annotation
    field = model.model_fields[name]
    text = field.description or ""
    default = field.default
    if default is None or isinstance(default, bool):
        return text
    shown = default.value if isinstance(default, StrEnum) else default
    return f"{text} (default: {shown})"
