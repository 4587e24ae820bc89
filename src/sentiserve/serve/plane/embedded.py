"""The embedded data plane: models run here, through the registry's batchers.

Validation, model lookup, tokenization, batching, deadlines and Triton's request metrics
happen here, once, whatever the transport. Besides each text model ``<name>`` (TEXT in,
LABEL and PROBABILITIES out) it serves ``<name>_onnx``, the raw engine model (token ids
in, logits out), through the same batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve import DEFAULT_MODEL
from sentiserve.engine.base import Task, activate
from sentiserve.engine.tokenizer import Encoded, Truncation
from sentiserve.errors import (
    DeadlineExceededError,
    ModelControlDisabledError,
    ModelNotFoundError,
    QueueFullError,
    SentiserveError,
)
from sentiserve.repository.layout import CONFIG
from sentiserve.serve import tracing
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.payloads import PayloadLog
from sentiserve.serve.plane import (
    Classification,
    InferRequest,
    InferResponse,
    Limits,
    ModelCard,
    ModelMetadata,
    ModelStatus,
    Tensor,
    TensorSpec,
    check_texts,
)
from sentiserve.serve.plane.tensors import (
    RAW_INPUTS,
    RAW_SUFFIX,
    TEXT_INPUT,
    TEXT_PAIR_INPUT,
    check_ids,
    raw_arrays,
    select_outputs,
    texts_of,
)
from sentiserve.serve.registry import LoadedModel, Registry
from sentiserve.serve.rollouts import Shadows
from sentiserve.triton.model_config import raw_engine_config, read_config

TOKENIZE_INLINE_CHARS = 20_000
"""Below this many characters, tokenizing on the event loop is cheaper than a thread hop."""


@dataclass
class _Count:
    texts: int = 0


class EmbeddedPlane:
    """Classifies texts with the registry's models and records Triton-style metrics."""

    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        limits: Limits,
        *,
        model_control: bool = False,
        payloads: PayloadLog | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.limits = limits
        self.model_control = model_control
        self.payloads = payloads
        self.shadows = Shadows(metrics)

    # --- health and metadata ---

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        return bool(self.registry.names())

    def default_model(self) -> str:
        """``sentiment`` when it is served or when several models are; the only model
        otherwise (a repository of one imported classifier needs no ``model`` field)."""
        names = self.registry.names()
        return names[0] if len(names) == 1 and DEFAULT_MODEL not in names else DEFAULT_MODEL

    async def model_ready(self, name: str, version: int | None = None) -> bool:
        try:
            self.registry.get(self.raw_base(name) or name, version)
        except ModelNotFoundError:
            return False
        return True

    async def metadata(self, name: str, version: int | None = None) -> ModelMetadata:
        base = self.raw_base(name)
        model = self.registry.get(base or name, version)
        labels = len(model.served.labels)
        # Unversioned: every version served (Triton's answer); versioned: that one.
        served = sorted(self.registry.serving(model.name).versions) if version is None else []
        versions = [str(v) for v in served] or [str(model.version)]
        if base is not None:
            return ModelMetadata(
                name=name,
                versions=versions,
                platform="onnxruntime_onnx",
                inputs=[TensorSpec(n, "INT64", [-1, -1]) for n in RAW_INPUTS],
                outputs=[TensorSpec("logits", "FP32", [-1, labels])],
            )
        # Triton's shapes for the same repository (its models batch TEXT as [n, 1]).
        return ModelMetadata(
            name=model.name,
            versions=versions,
            platform="sentiserve_onnxruntime",
            inputs=[TensorSpec(n, "BYTES", [-1, 1]) for n in (TEXT_INPUT, TEXT_PAIR_INPUT)],
            outputs=[
                TensorSpec("LABEL", "BYTES", [-1, 1]),
                TensorSpec("PROBABILITIES", "FP32", [-1, labels]),
            ],
        )

    async def model_config(self, name: str, version: int | None = None) -> Any:
        """The repository's ``config.pbtxt`` as Triton completes it; for ``<model>_onnx``,
        the configuration Triton would report for the raw ONNX Runtime engine."""
        base = self.raw_base(name)
        model = self.registry.get(base or name, version)
        if base is not None:
            size = model.batcher.config.max_batch_size
            return raw_engine_config(name, len(model.served.labels), size)
        return await asyncio.to_thread(read_config, model.served.version.path.parent / CONFIG)

    async def card(self, name: str) -> ModelCard:
        model = self.registry.get(name)
        manifest = model.served.version.manifest
        tokenizer = model.served.tokenizer
        return ModelCard(
            model.name,
            model.version,
            model.served.labels,
            str(manifest.task),
            tokenizer.max_length,
            tokenizer.truncation,
            self.limits.max_texts,
        )

    def raw_base(self, name: str) -> str | None:
        """The text model behind a raw-engine model name (``sentiment_onnx`` -> ``sentiment``)."""
        if name.endswith(RAW_SUFFIX) and name[: -len(RAW_SUFFIX)] in self.registry.names():
            return name[: -len(RAW_SUFFIX)]
        return None

    # --- inference ---

    async def infer(self, request: InferRequest) -> InferResponse:
        """A KServe v2 inference: TEXT for a text model, token ids for ``<name>_onnx``."""
        tensors = request.by_name()
        counted: tuple[list[int] | None, list[int] | None] = (None, None)
        if self.raw_base(request.model) is not None:
            ids, mask = raw_arrays(tensors, request.model)
            model, logits = await self.logits(
                request.model,
                ids,
                mask,
                version=request.version,
                timeout_s=request.timeout_s,
                transport_s=request.transport_deadline_s,
            )
            outputs = [Tensor("logits", "FP32", list(logits.shape), logits)]
            name, version = request.model, model.version
        else:
            texts, pairs, shape = texts_of(tensors, request.model)
            result = await self.classify(
                request.model,
                texts,
                text_pairs=pairs,
                version=request.version,
                timeout_s=request.timeout_s,
                transport_s=request.transport_deadline_s,
                truncation=request.truncation,
            )
            labels = [result.labels[i].encode() for i in result.best]
            outputs = [
                Tensor("LABEL", "BYTES", [len(labels), *shape[1:]], labels),
                Tensor(
                    "PROBABILITIES", "FP32", list(result.probabilities.shape), result.probabilities
                ),
            ]
            name, version = result.model, result.version
            counted = result.tokens, result.kept
        chosen = select_outputs(request.outputs, outputs)
        return InferResponse(name, version, chosen, request.id, *counted)

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
        transport_s: float | None = None,
        truncation: Truncation | None = None,
        max_tokens: int | None = None,
    ) -> Classification:
        """Label and probabilities for each text, with its token counts and logits.

        Raises:
            SentiserveError: with the HTTP status that the transport should answer with.
        """
        model = self.registry.route(model_name, version)
        # Chosen with the version, before any await: a reload or unload while this request
        # runs changes neither, and never fails an answer already made.
        shadow = self.registry.serving(model_name).shadow if version is None else None
        call = (texts, text_pairs, timeout_s, transport_s, truncation, max_tokens)
        result, checked, pairs = await self._classify(model, *call)
        self.metrics.record_predictions(
            model.name,
            model.version,
            result.given(),
            result.top_scores(),
            result.tokens,
            sum(result.truncated or ()),
        )
        if self.payloads is not None:
            self.payloads.record(result, checked, pairs)
        if shadow is not None:
            # The copy gets the default deadline from when it starts, not the client's.
            copy = (checked, pairs, None, None, truncation, max_tokens)

            async def run() -> Classification:
                return (await self._classify(shadow, *copy))[0]

            self.shadows.submit(result, shadow.version, run)
        return result

    async def _classify(
        self,
        model: LoadedModel,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None,
        timeout_s: float | None,
        transport_s: float | None,
        truncation: Truncation | None,
        max_tokens: int | None,
    ) -> tuple[Classification, list[str], list[str] | None]:
        """The texts (and pairs) through ``model``: checked, tokenized, batched, activated
        (with the texts as checked)."""
        with self._accounted(model) as count:
            deadline = self.limits.deadline(timeout_s, transport_s)
            checked = check_texts(texts, self.limits)
            tokenizer = model.served.tokenizer
            pairs = None
            if text_pairs is not None:
                pairs = check_texts(text_pairs, self.limits, what="text_pair")
            chars = sum(len(t) for t in checked) + sum(len(t) for t in pairs or ())

            def encode(parallel: bool) -> Encoded:
                if pairs is None:
                    return tokenizer.encode_counted(
                        checked, parallel=parallel, truncation=truncation, max_tokens=max_tokens
                    )
                return tokenizer.encode_pairs_counted(
                    checked, pairs, parallel=parallel, truncation=truncation, max_tokens=max_tokens
                )

            with tracing.span("tokenize", **{"sentiserve.texts": len(checked)}) as traced:
                if chars > TOKENIZE_INLINE_CHARS:
                    encoded = await asyncio.to_thread(encode, True)
                else:
                    encoded = encode(False)
                if traced is not None:
                    traced.set_attribute("sentiserve.tokens", sum(encoded.lengths))
            sequences = encoded.ids
            count.texts = len(sequences)
            logits = await self._batch(model, sequences, deadline)
        manifest = model.served.version.manifest
        probabilities = activate(logits, manifest.task, model.served.temperature)
        thresholds = manifest.thresholds_or_default() if manifest.task == Task.MULTI_LABEL else None
        result = Classification(
            model.name,
            model.version,
            model.served.labels,
            probabilities,
            thresholds,
            logits=logits,
            tokens=encoded.lengths,
            kept=[len(ids) for ids in sequences],
        )
        return result, checked, pairs

    async def logits(
        self,
        model_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64] | None,
        *,
        version: int | None = None,
        timeout_s: float | None = None,
        transport_s: float | None = None,
    ) -> tuple[LoadedModel, npt.NDArray[np.float32]]:
        """Logits for right-padded token id rows (the raw engine model).

        Rows are unpadded by their attention mask and go through the same batcher as texts,
        so they are grouped by length and answered independently of their batch-mates.
        """
        base = self.raw_base(model_name)
        if base is None:
            raise ModelNotFoundError(f"unknown model {model_name!r}")
        model = self.registry.route(base, version)
        with self._accounted(model) as count:
            deadline = self.limits.deadline(timeout_s, transport_s)
            sequences = check_ids(input_ids, attention_mask, model, self.limits)
            count.texts = len(sequences)
            logits = await self._batch(model, sequences, deadline)
        return model, logits

    async def _batch(
        self, model: LoadedModel, sequences: list[list[int]], deadline: float
    ) -> npt.NDArray[np.float32]:
        key = (model.name, str(model.version))
        self.metrics.pending.inc(key, len(sequences))
        try:
            return await model.batcher.infer(sequences, deadline)
        finally:
            self.metrics.pending.dec(key, len(sequences))

    @contextmanager
    def _accounted(self, model: LoadedModel) -> Iterator[_Count]:
        """Triton's request metrics around one request: success (with its texts and time)
        or failure by reason."""
        start = time.monotonic()
        key = (model.name, str(model.version))
        count = _Count()
        m = self.metrics
        try:
            yield count
        except SentiserveError as exc:
            m.request_failure.inc((*key, _reason(exc)))
            raise
        elapsed = time.monotonic() - start
        m.request_success.inc(key)
        m.inference_count.inc(key, count.texts)
        m.request_duration.inc(key, elapsed * 1e6)
        m.request_latency.labels(*key).observe(elapsed)

    # --- repository and statistics ---

    async def index(self) -> list[ModelStatus]:
        return self.registry.index()

    def _check_model_control(self) -> None:
        if not self.model_control:
            raise ModelControlDisabledError(
                "model control is off; start the server with --model-control to load and "
                "unload models over the API"
            )

    async def load(self, name: str) -> None:
        self._check_model_control()
        # Verifying checksums, opening the engines and warming them up block: off the loop.
        await asyncio.to_thread(self.registry.load, name)

    async def unload(self, name: str) -> None:
        self._check_model_control()
        await asyncio.to_thread(self.registry.unload, name)

    async def statistics(self, name: str | None, version: int | None = None) -> list[Any]:
        """Per version: ``version`` of ``name``, or every version served (Triton's answer)."""
        if name and version is not None:
            return [self._statistics(self.registry.get(name, version))]
        names = [name] if name else self.registry.names()
        served = [self.registry.serving(n).versions for n in names]
        return [self._statistics(v[number]) for v in served for number in sorted(v)]

    def _statistics(self, model: LoadedModel) -> dict[str, Any]:
        """Triton's model statistics object, from the same counters as the metrics."""
        key = (model.name, str(model.version))
        m = self.metrics

        def duration(count: float, us: float) -> dict[str, int]:
            return {"count": int(count), "ns": int(us * 1000)}

        executions = m.exec_count.value(key)
        return {
            "name": model.name,
            "version": str(model.version),
            "inference_count": int(m.inference_count.value(key)),
            "execution_count": int(executions),
            "inference_stats": {
                "success": duration(m.request_success.value(key), m.request_duration.value(key)),
                "fail": duration(m.request_failure.total(key), 0),
                "queue": duration(m.inference_count.value(key), m.queue_duration.value(key)),
                "compute_input": duration(executions, m.compute_input.value(key)),
                "compute_infer": duration(executions, m.compute_infer.value(key)),
                "compute_output": duration(executions, m.compute_output.value(key)),
            },
        }

    async def close(self) -> None:
        self.shadows.cancel()
        await asyncio.to_thread(self.registry.stop)
        if self.payloads is not None:
            await asyncio.to_thread(self.payloads.close)


def _reason(exc: SentiserveError) -> str:
    """Triton's failure reasons: REJECTED (queue full), CANCELED (deadline), BACKEND, OTHER."""
    if isinstance(exc, QueueFullError):
        return "REJECTED"
    if isinstance(exc, DeadlineExceededError):
        return "CANCELED"
    if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return "BACKEND"
    return "OTHER"
