"""The data plane: validation, model lookup, tokenization, batching, metrics.

Every transport (friendly REST, KServe v2 REST, KServe v2 gRPC) converts its types and
calls this; none of them validates or batches on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import softmax
from sentiserve.errors import ConfigError, ModelNotFoundError, SentiserveError
from sentiserve.serve.auth import ApiKey
from sentiserve.serve.batcher import DeadlineExceededError, QueueFullError
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.registry import LoadedModel, Registry

RAW_SUFFIX = "_onnx"
"""``<model>_onnx`` is the raw engine of ``<model>``: token ids in, logits out."""
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
        max_in_flight: Most inference requests inside the server at once (being read,
            tokenized, queued or run). Beyond it a request is answered 503 before its body
            is read, so an overloaded event loop stays responsive.
    """

    max_texts: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    default_timeout_s: float = 10.0
    max_timeout_s: float = 60.0
    max_in_flight: int = 512

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_body_bytes", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ConfigError("default_timeout_s must be within (0, max_timeout_s]")

    def deadline(self, timeout_s: float | None) -> float:
        """The monotonic time a request asking for ``timeout_s`` (None: the default) must
        end by.

        Raises:
            InvalidInputError: The timeout is not within (0, max_timeout_s].
        """
        if timeout_s is None:
            timeout_s = self.default_timeout_s
        if not 0 < timeout_s <= self.max_timeout_s:
            raise InvalidInputError(f"timeout must be within (0, {self.max_timeout_s:g}] seconds")
        return time.monotonic() + timeout_s


@dataclass(frozen=True)
class Classification:
    """Results for one request, in text order."""

    model: str
    version: int
    labels: list[str]
    probabilities: npt.NDArray[np.float32]

    def predicted(self) -> list[str]:
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]


class TextClassifier(Protocol):
    """What the friendly API needs: the embedded :class:`DataPlane` or the Triton gateway."""

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Classification: ...


def check_ids(
    input_ids: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64] | None,
    model: LoadedModel,
    limits: Limits,
) -> list[list[int]]:
    """Validate right-padded token id rows and strip their padding."""
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InvalidInputError("input_ids must have shape [batch, sequence], both > 0")
    if input_ids.shape[0] > limits.max_texts:
        raise PayloadTooLargeError(
            f"{input_ids.shape[0]} rows in one request; the limit is {limits.max_texts}"
        )
    tokenizer = model.served.tokenizer
    if input_ids.shape[1] > tokenizer.max_length:
        raise InvalidInputError(
            f"sequence length {input_ids.shape[1]} exceeds the model's {tokenizer.max_length}"
        )
    if input_ids.min() < 0 or input_ids.max() >= tokenizer.vocab_size:
        raise InvalidInputError(f"token ids must be within 0..{tokenizer.vocab_size - 1}")
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise InvalidInputError("attention_mask must have the shape of input_ids")
    if not np.isin(attention_mask, (0, 1)).all():
        raise InvalidInputError("attention_mask must hold only 0 and 1")
    lengths = attention_mask.sum(axis=1)
    # Right padding: each row's mask is ones, then zeros.
    prefix = np.arange(input_ids.shape[1])[None, :] < lengths[:, None]
    if not np.array_equal(prefix, attention_mask.astype(bool)) or (lengths == 0).any():
        raise InvalidInputError("attention_mask must be ones then zeros (right padding)")
    return [row[:n].tolist() for row, n in zip(input_ids, lengths, strict=True)]


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
        model = self.registry.get(model_name, version)

        async def prepare() -> list[list[int]]:
            checked = check_texts(list(texts), self.limits)
            tokenizer = model.served.tokenizer
            if sum(len(t) for t in checked) > TOKENIZE_INLINE_CHARS:
                return await asyncio.to_thread(tokenizer.encode, checked)
            return tokenizer.encode(checked)

        logits = await self._run(model, prepare, timeout_s)
        return Classification(model.name, model.version, model.served.labels, softmax(logits))

    def raw_base(self, name: str) -> str | None:
        """The text model behind a raw-engine model name (``sentiment_onnx`` -> ``sentiment``)."""
        if name.endswith(RAW_SUFFIX) and name[: -len(RAW_SUFFIX)] in self.registry.names():
            return name[: -len(RAW_SUFFIX)]
        return None

    async def logits(
        self,
        model_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64] | None,
        *,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> tuple[LoadedModel, npt.NDArray[np.float32]]:
        """Logits for right-padded token id rows (the raw engine model).

        Rows are unpadded by their attention mask and go through the same batcher as texts,
        so they are grouped by length and answered independently of their batch-mates.
        """
        base = self.raw_base(model_name)
        if base is None:
            raise ModelNotFoundError(f"unknown model {model_name!r}")
        model = self.registry.get(base, version)

        async def prepare() -> list[list[int]]:
            return check_ids(input_ids, attention_mask, model, self.limits)

        return model, await self._run(model, prepare, timeout_s)

    async def _run(
        self,
        model: LoadedModel,
        prepare: Callable[[], Awaitable[list[list[int]]]],
        timeout_s: float | None,
    ) -> npt.NDArray[np.float32]:
        """Prepare sequences, batch them, and record Triton's request metrics."""
        start = time.monotonic()
        key = (model.name, str(model.version))
        deadline = self.limits.deadline(timeout_s)
        m = self.metrics
        try:
            sequences = await prepare()
            m.pending.inc(key, len(sequences))
            try:
                logits = await model.batcher.infer(sequences, deadline)
            finally:
                m.pending.dec(key, len(sequences))
        except SentiserveError as exc:
            m.request_failure.inc((*key, _reason(exc)))
            raise
        elapsed = time.monotonic() - start
        m.request_success.inc(key)
        m.inference_count.inc(key, len(sequences))
        m.request_duration.inc(key, elapsed * 1e6)
        m.request_latency.labels(*key).observe(elapsed)
        return logits

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
