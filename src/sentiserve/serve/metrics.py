"""Prometheus metrics, declared once, with Triton's names and meanings where Triton has one.

Triton's counters (``nv_inference_*``) count requests, inferences (texts) and executions
(engine calls) with cumulative microsecond durations; the histograms (``sentiserve_*``) are
what p99s and autoscaling need. Every metric carries the labels ``model`` and ``version``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from sentiserve.monitoring import drift
from sentiserve.serve.batcher import BatchStats
from sentiserve.serve.gpu_metrics import GpuMetrics

LABELS = ("model", "version")

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
SCORE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""The given label's probability: below 0.5 only for a model with more than two labels."""
TEXT_TOKEN_BUCKETS = drift.TOKEN_BUCKETS
DELTA_BUCKETS = (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""|Δp| between a shadow version's probability and the returned one's."""


class TritonMetric:
    """A counter or gauge rendered exactly as Triton names it (prometheus_client would
    append ``_total`` to counters, and Triton's names have none). Thread-safe."""

    def __init__(
        self, name: str, doc: str, kind: str = "counter", labels: tuple[str, ...] = LABELS
    ) -> None:
        self.name, self.doc, self.kind, self.label_names = name, doc, kind, labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError("counters only go up")
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def dec(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) - amount

    def value(self, labels: tuple[str, ...]) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def total(self, prefix: tuple[str, ...]) -> float:
        """Sum over every label set that starts with ``prefix``."""
        with self._lock:
            return sum(v for k, v in self._values.items() if k[: len(prefix)] == prefix)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.doc}"
        yield f"# TYPE {self.name} {self.kind}"
        with self._lock:
            items = sorted(self._values.items())
        for labels, value in items:
            pairs = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(self.label_names, labels, strict=True)
            )
            yield f"{self.name}{{{pairs}}} {value:.17g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """All of the server's metrics (one instance per app, so tests stay isolated)."""

    def __init__(self, gpu: GpuMetrics | None = None) -> None:
        self.gpu = gpu if gpu is not None else GpuMetrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        t = TritonMetric
        self.request_success = t("nv_inference_request_success", "Successful inference requests.")
        self.request_failure = t(
            "nv_inference_request_failure",
            "Failed inference requests, by reason (REJECTED, CANCELED, BACKEND, OTHER).",
            labels=(*LABELS, "reason"),
        )
        self.inference_count = t("nv_inference_count", "Texts inferred (batch items).")
        self.exec_count = t("nv_inference_exec_count", "Engine executions (batches run).")
        self.pending = t(
            "nv_inference_pending_request_count", "Texts queued or running.", kind="gauge"
        )
        self.request_duration = t(
            "nv_inference_request_duration_us",
            "Cumulative end-to-end request time inside the server, in microseconds.",
        )
        self.queue_duration = t(
            "nv_inference_queue_duration_us",
            "Cumulative time texts waited in the batcher's queue, in microseconds.",
        )
        self.compute_input = t(
            "nv_inference_compute_input_duration_us",
            "Cumulative time preparing engine inputs (padding), in microseconds.",
        )
        self.compute_infer = t(
            "nv_inference_compute_infer_duration_us",
            "Cumulative time in the engine, in microseconds.",
        )
        self.compute_output = t(
            "nv_inference_compute_output_duration_us",
            "Cumulative time turning engine outputs into results, in microseconds.",
        )
        self.triton = [
            self.request_success,
            self.request_failure,
            self.inference_count,
            self.exec_count,
            self.pending,
            self.request_duration,
            self.queue_duration,
            self.compute_input,
            self.compute_infer,
            self.compute_output,
        ]
        r = self.registry
        self.overload_rejected = Counter(
            "sentiserve_overload_rejected",
            "Inference requests refused (HTTP 503, gRPC UNAVAILABLE) before their body was "
            "read, because max_in_flight requests were already inside (HTTP and gRPC share it).",
            registry=r,
        )
        self.requests = Counter(
            "sentiserve_requests",
            "Requests answered, by transport (http, grpc), operation (infer, metadata, "
            "statistics, repository) and status (HTTP's, for gRPC the same decision's).",
            ("transport", "operation", "status"),
            registry=r,
        )
        self._backend_ready: Gauge | None = None
        self.predictions = Counter(
            "sentiserve_predictions",
            "Texts answered, by the label given (the most probable; for a multi-label model, "
            "each label at or above its threshold).",
            (*LABELS, "label"),
            registry=r,
        )
        self.prediction_score = Histogram(
            "sentiserve_prediction_score",
            "Each text's highest score (a probability; a regression model's raw output).",
            LABELS,
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.input_tokens = Histogram(
            "sentiserve_input_tokens",
            "Tokens per text before any cut, special tokens included (embedded server only: "
            "through the gateway, Triton tokenizes).",
            LABELS,
            buckets=TEXT_TOKEN_BUCKETS,
            registry=r,
        )
        self.truncated_inputs = Counter(
            "sentiserve_truncated_inputs",
            "Texts cut to the model's length (embedded server only).",
            LABELS,
            registry=r,
        )
        self.reference_label_share = Gauge(
            "sentiserve_reference_label_share",
            "Each label's share of the answers on the validation split when the version was "
            "built (the manifest's reference): the baseline of the label drift alert.",
            (*LABELS, "label"),
            registry=r,
        )
        self.reference_input_tokens = Gauge(
            "sentiserve_reference_input_tokens",
            "Input length quantiles in tokens on the validation split when the version was "
            "built (embedded server only): the baseline of the length drift alert.",
            (*LABELS, "quantile"),
            registry=r,
        )
        self._references: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}
        self.payload_sent = Counter(
            "sentiserve_payload_events_sent",
            "Payload log events the sink accepted (two per logged request: request, response).",
            registry=r,
        )
        self.payload_dropped = Counter(
            "sentiserve_payload_events_dropped",
            "Payload log events lost, by reason: queue_full (the sink fell behind; dropped "
            "rather than waited for) or sink_error (the sink refused or was unreachable).",
            ("reason",),
            registry=r,
        )
        self.trace_exported = Counter(
            "sentiserve_trace_spans_exported",
            "Spans the OTLP receiver accepted (tracing on).",
            registry=r,
        )
        self.trace_dropped = Counter(
            "sentiserve_trace_spans_dropped",
            "Spans lost, by reason: queue_full (the exporter fell behind; dropped rather than "
            "waited for) or export_error (the receiver refused or was unreachable).",
            ("reason",),
            registry=r,
        )
        self.shadow_predictions = Counter(
            "sentiserve_shadow_predictions",
            "Texts a shadow version also answered, by whether its label (for a multi-label "
            "model, its set of labels) agreed with the answer returned (agreement: true, false).",
            (*LABELS, "shadow_version", "agreement"),
            registry=r,
        )
        self.shadow_delta = Histogram(
            "sentiserve_shadow_probability_delta",
            "Per text, the largest |difference| between the returned and the shadow "
            "version's probability of a label both have.",
            (*LABELS, "shadow_version"),
            buckets=DELTA_BUCKETS,
            registry=r,
        )
        self.shadow_skipped = Counter(
            "sentiserve_shadow_requests_skipped",
            "Requests not copied to the shadow version, by reason: busy (too many shadow "
            "requests in flight) or error (the shadow version failed).",
            (*LABELS, "shadow_version", "reason"),
            registry=r,
        )
        self.request_latency = Histogram(
            "sentiserve_request_duration_seconds",
            "Request latency inside the server.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "sentiserve_queue_duration_seconds",
            "Time a text waited in the queue.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiserve_batch_size",
            "Texts per engine execution.",
            LABELS,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "sentiserve_batch_tokens",
            "Padded tokens per engine execution.",
            LABELS,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )

    def record_predictions(
        self,
        model: str,
        version: int,
        given: Sequence[str],
        scores: Sequence[float],
        tokens: Sequence[int] | None = None,
        truncated: int = 0,
    ) -> None:
        """What a request was answered (prediction monitoring): the labels given, each
        text's top score, and (where the backend counts them) its tokens before any cut and
        how many texts were cut."""
        key = (model, str(version))
        for label, count in collections.Counter(given).items():
            self.predictions.labels(*key, label).inc(count)
        score = self.prediction_score.labels(*key)
        for value in scores:
            score.observe(value)
        if tokens is not None:
            length = self.input_tokens.labels(*key)
            for n in tokens:
                length.observe(n)
            # Counted (0 included) wherever lengths are: the truncated ratio is then 0, not
            # absent, until a text is cut.
            self.truncated_inputs.labels(*key).inc(truncated)

    def set_reference(
        self, model: str, version: int, reference: dict[str, Any], *, lengths: bool = True
    ) -> None:
        """Export ``model``'s reference (the manifest's, see ``monitoring.drift``) in place of
        the one of the version it served before; nothing when it has none. ``lengths``:
        whether this server counts tokens (the gateway does not: no length baseline)."""
        for gauge, key in self._references.pop(model, []):
            gauge.remove(*key)
        series: list[tuple[Gauge, tuple[str, ...]]] = []
        for label, share in (reference.get("label_shares") or {}).items():
            key = (model, str(version), label)
            self.reference_label_share.labels(*key).set(share)
            series.append((self.reference_label_share, key))
        if lengths:
            for name, value in (reference.get("input_tokens") or {}).items():
                key = (model, str(version), str(int(name[1:]) / 100))
                self.reference_input_tokens.labels(*key).set(value)
                series.append((self.reference_input_tokens, key))
        self._references[model] = series

    def record_batch(self, model: str, version: int, stats: BatchStats) -> None:
        """Per-execution metrics: the batcher's hook, called from its worker thread."""
        key = (model, str(version))
        self.exec_count.inc(key)
        self.batch_size.labels(*key).observe(stats.size)
        self.batch_tokens.labels(*key).observe(stats.padded_tokens)
        self.queue_duration.inc(key, sum(stats.queue_seconds) * 1e6)
        for seconds in stats.queue_seconds:
            self.queue_latency.labels(*key).observe(seconds)
        # Triton's meaning: every text in a batch is charged the batch's whole compute time,
        # so compute/requests is the engine latency a request saw.
        self.compute_input.inc(key, stats.input_seconds * 1e6 * stats.size)
        self.compute_infer.inc(key, stats.infer_seconds * 1e6 * stats.size)
        self.compute_output.inc(key, stats.output_seconds * 1e6 * stats.size)

    def exposition(self) -> bytes:
        """Prometheus text format: Triton's metrics, then histograms and process metrics."""
        lines = [line for metric in self.triton for line in metric.render()]
        lines += self.gpu.render()
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)

    def backend_ready(self) -> Gauge:
        """``sentiserve_backend_ready``: gateway mode only, made on first use, so an embedded
        server never exports it (a 0 there would page as "Triton down")."""
        if self._backend_ready is None:
            self._backend_ready = Gauge(
                "sentiserve_backend_ready",
                "Gateway mode: 1 when Triton answered that the readiness model is ready at the "
                "last check (every few seconds), else 0. The gateway stays ready either way.",
                registry=self.registry,
            )
        return self._backend_ready
