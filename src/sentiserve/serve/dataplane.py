"""The data plane: validation, model lookup, tokenization, batching, metrics.

Every transport (friendly REST, KServe v2 REST, KServe v2 gRPC) converts its types and
calls this; none of them validates or batches on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import numpy as np
import numpy.typing as npt

from sentiserve.errors import SentiserveError
from sentiserve.serve.auth import ApiKey
from sentiserve.serve.batcher import BatchStats, DeadlineExceededError, QueueFullError
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.registry import LoadedModel, Registry

TOKENIZE_INLINE_CHARS = 20_000
"""Below this many characters, tokenizing on the event loop is cheaper than a thread hop."""


class InvalidInputError(SentiserveError):
    """The request is malformed: wrong types, missing or empty texts."""

    status = HTTPStatus.BAD_REQUEST


class ModelControlDisabledError(SentiserveError):
    """Loading and unloading models over the API is off (``--model-control`` turns it on)."""

    status = HTTPStatus.FORBIDDEN


class PayloadTooLargeError(SentiserveError):
    """Too many texts, or a body over the size limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


@dataclass(frozen=True)
class Limits:
    """Per-request limits.

    Attributes:
        max_texts: Most texts in one request.
        max_body_bytes: Largest request body.
        default_timeout_s: Deadline of a request that sets none.
        max_timeout_s: Largest deadline a request may ask for.
    """

    max_texts: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    default_timeout_s: float = 10.0
    max_timeout_s: float = 60.0


@dataclass(frozen=True)
class Classification:
    """Results for one request, in text order."""

    model: str
    version: int
    labels: list[str]
    probabilities: npt.NDArray[np.float32]

    def predicted(self) -> list[str]:
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]


def check_texts(texts: object, limits: Limits) -> list[str]:
    """Validate a list of texts (non-empty strings, within the count limit)."""
    if not isinstance(texts, list | tuple):
        raise InvalidInputError("texts must be a list of strings")
    if not texts:
        raise InvalidInputError("no texts given")
    if len(texts) > limits.max_texts:
        raise PayloadTooLargeError(
            f"{len(texts)} texts in one request; the limit is {limits.max_texts}"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"text {i} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"text {i} is empty")
    return list(texts)


class DataPlane:
    """Classifies texts with the registry's models and records Triton-style metrics."""

    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        limits: Limits,
        api_key: ApiKey | None = None,
        *,
        model_control: bool = False,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.limits = limits
        self.api_key = api_key or ApiKey(None)
        self.model_control = model_control
        self.accepting = True

    def check_model_control(self) -> None:
        if not self.model_control:
            raise ModelControlDisabledError(
                "model control is off; start the server with --model-control to load and "
                "unload models over the API"
            )

    def ready(self) -> bool:
        return self.accepting and bool(self.registry.names())

    def model(self, name: str, version: int | None = None) -> LoadedModel:
        return self.registry.get(name, version)

    def deadline(self, timeout_s: float | None) -> float:
        if timeout_s is None:
            timeout_s = self.limits.default_timeout_s
        if not 0 < timeout_s <= self.limits.max_timeout_s:
            raise InvalidInputError(
                f"timeout must be within (0, {self.limits.max_timeout_s:g}] seconds"
            )
        return time.monotonic() + timeout_s

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """Label and probabilities for each text.

        Raises:
            SentiserveError: with the HTTP status that the transport should answer with.
        """
        start = time.monotonic()
        model = self.registry.get(model_name, version)
        key = (model.name, str(model.version))
        deadline = self.deadline(timeout_s)
        m = self.metrics
        try:
            texts = check_texts(list(texts), self.limits)
            tokenizer = model.served.tokenizer
            if sum(len(t) for t in texts) > TOKENIZE_INLINE_CHARS:
                sequences = await asyncio.to_thread(tokenizer.encode, texts)
            else:
                sequences = tokenizer.encode(texts)
            m.pending.inc(key, len(sequences))
            try:
                probs = await model.batcher.infer(sequences, deadline)
            finally:
                m.pending.dec(key, len(sequences))
        except SentiserveError as exc:
            m.request_failure.inc((*key, _reason(exc)))
            raise
        elapsed = time.monotonic() - start
        m.request_success.inc(key)
        m.inference_count.inc(key, len(texts))
        m.request_duration.inc(key, elapsed * 1e6)
        m.request_latency.labels(*key).observe(elapsed)
        return Classification(model.name, model.version, model.served.labels, probs)

    def record_batch(self, model: str, version: int, stats: BatchStats) -> None:
        """Batcher hook: per-execution metrics (called from the batcher's thread)."""
        key = (model, str(version))
        m = self.metrics
        m.exec_count.inc(key)
        m.batch_size.labels(*key).observe(stats.size)
        m.batch_tokens.labels(*key).observe(stats.padded_tokens)
        m.queue_duration.inc(key, sum(stats.queue_seconds) * 1e6)
        for seconds in stats.queue_seconds:
            m.queue_latency.labels(*key).observe(seconds)
        m.compute_input.inc(key, stats.input_seconds * 1e6)
        m.compute_infer.inc(key, stats.infer_seconds * 1e6)
        m.compute_output.inc(key, stats.output_seconds * 1e6)

    def statistics(self, model: LoadedModel) -> dict[str, object]:
        """Triton's model statistics object, from the same counters as the metrics."""
        key = (model.name, str(model.version))
        m = self.metrics

        def duration(count: float, us: float) -> dict[str, int]:
            return {"count": int(count), "ns": int(us * 1000)}

        success = m.request_success.value(key)
        return {
            "name": model.name,
            "version": str(model.version),
            "inference_count": int(m.inference_count.value(key)),
            "execution_count": int(m.exec_count.value(key)),
            "inference_stats": {
                "success": duration(success, m.request_duration.value(key)),
                "fail": duration(m.request_failure.total(key), 0),
                "queue": duration(m.inference_count.value(key), m.queue_duration.value(key)),
                "compute_input": duration(m.exec_count.value(key), m.compute_input.value(key)),
                "compute_infer": duration(m.exec_count.value(key), m.compute_infer.value(key)),
                "compute_output": duration(m.exec_count.value(key), m.compute_output.value(key)),
            },
        }


def _reason(exc: SentiserveError) -> str:
    """Triton's failure reasons: REJECTED (queue full), CANCELED (deadline), BACKEND, OTHER."""
    if isinstance(exc, QueueFullError):
        return "REJECTED"
    if isinstance(exc, DeadlineExceededError):
        return "CANCELED"
    if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return "BACKEND"
    return "OTHER"
