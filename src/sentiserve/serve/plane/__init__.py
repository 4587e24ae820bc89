"""The data plane's interface and the types that cross it.

A data plane owns the protocol (the Open Inference Protocol's operations: health, model
metadata, inference, the repository and statistics extensions) plus the friendly
``classify``. Two implement it: :class:`~sentiserve.serve.plane.embedded.EmbeddedPlane` (models
run here) and :class:`~sentiserve.serve.plane.triton.TritonPlane` (a remote Triton runs them).
Transports (``rest_v1``, ``rest_v2``, ``grpc_v2``) only convert wire types to these and
back (the MLServer pattern), so every protocol gets the same validation, errors, limits and
deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import sigmoid, softmax
from sentiserve.engine.tokenizer import Truncation, text_problem
from sentiserve.errors import ConfigError, InvalidInputError, PayloadTooLargeError


@dataclass(frozen=True)
class Limits:
    """Per-request limits of the protocol (the transport's, such as the in-flight budget
    and body size, are :class:`~sentiserve.serve.policy.TransportLimits`).

    Attributes:
        max_texts: Most texts in one request.
        default_timeout_s: Deadline of a request that sets none.
        max_timeout_s: Longest deadline a request gets; a longer one asked for (a client's
            default gRPC deadline, say) is cut to this, not refused.
    """

    max_texts: int = 256
    default_timeout_s: float = 10.0
    max_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_texts < 1:
            raise ConfigError("max_texts must be >= 1")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ConfigError("default_timeout_s must be within (0, max_timeout_s]")

    def deadline(self, timeout_s: float | None = None, transport_s: float | None = None) -> float:
        """The ``time.monotonic()`` by which a request must be answered.

        Args:
            timeout_s: What the request asked for (None: the default).
            transport_s: What the transport allows (a gRPC deadline), if anything.

        Raises:
            InvalidInputError: ``timeout_s`` is not a positive number of seconds.
        """
        if timeout_s is not None and not timeout_s > 0:  # also refuses NaN
            raise InvalidInputError("timeout must be a positive number of seconds")
        chosen = self.default_timeout_s if timeout_s is None else timeout_s
        if transport_s is not None:
            chosen = min(chosen, transport_s) if timeout_s is not None else transport_s
        return time.monotonic() + min(chosen, self.max_timeout_s)


class EmptyInputError(InvalidInputError):
    """No texts, or a text with nothing to classify in it."""


DIRECTIONS = {
    "right": Truncation.TRUNCATE,
    "left": Truncation.TRUNCATE_LEFT,
    "head_tail": Truncation.HEAD_TAIL,
}
"""Where a request may ask a long text to be cut (case does not matter)."""


def requested_truncation(truncate: object, direction: object) -> Truncation | None:
    """The long-text policy a request asks for with TEI's two fields (every API that has a
    field for it takes these): ``truncate`` false refuses a long text, true cuts it from
    ``direction`` (right when not given); ``direction`` alone means cut. Neither: None, the
    model's own policy.

    Raises:
        InvalidInputError: ``direction`` is not right, left or head_tail, or ``truncate``
            not a boolean (as a wire's untyped parameters may send).
    """
    if truncate is not None and not isinstance(truncate, bool):
        raise InvalidInputError("truncate must be true or false")
    if direction is not None and not isinstance(direction, str):
        raise InvalidInputError("truncation_direction must be a string")
    if direction is not None:
        chosen = DIRECTIONS.get(direction.lower())
        if chosen is None:
            raise InvalidInputError(
                f"truncation_direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}"
            )
        if truncate is False:
            raise InvalidInputError("truncation_direction needs truncate true (or left out)")
        return chosen
    if truncate is None:
        return None
    return Truncation.TRUNCATE if truncate else Truncation.REJECT


def check_texts(texts: object, limits: Limits, what: str = "text") -> list[str]:
    """Validate a list of texts (or of ``text_pair``s): non-empty strings of valid Unicode,
    within the limit."""
    if not isinstance(texts, list | tuple):
        raise InvalidInputError(f"{what}s must be a list of strings")
    if not texts:
        raise EmptyInputError(f"no {what}s given")
    if len(texts) > limits.max_texts:
        raise PayloadTooLargeError(
            f"{len(texts)} {what}s in one request; the limit is {limits.max_texts}"
        )
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            error = EmptyInputError if problem == "is empty" else InvalidInputError
            raise error(f"{what} {i} {problem}")
    return list(texts)


@dataclass(frozen=True)
class Classification:
    """Results for one request, in text order."""

    model: str
    version: int
    labels: list[str]
    probabilities: npt.NDArray[np.float32]
    thresholds: list[float] | None = None
    """Multi-label models only: a label is given when its probability reaches its threshold."""
    logits: npt.NDArray[np.float32] | None = None
    """The model's raw scores, before calibration and activation (None: not available)."""
    tokens: list[int] | None = None
    """Tokens of each text before it was cut, special tokens included (None: not counted)."""
    kept: list[int] | None = None
    """Tokens of each text the model saw."""

    @property
    def truncated(self) -> list[bool] | None:
        """Whether each text was cut (None: not counted)."""
        if self.tokens is None or self.kept is None:
            return None
        return [k < t for k, t in zip(self.kept, self.tokens, strict=True)]

    def scores(self, function: str | None = None) -> npt.NDArray[np.float32]:
        """Each text's score per label: the served probabilities (calibrated), or, where a
        client asks for a function as transformers' pipeline does, that function of the raw
        logits (``softmax``, ``sigmoid``, or ``none`` for the logits themselves).

        Raises:
            InvalidInputError: ``function`` is unknown, or the logits are not available.
        """
        if function is None:
            return self.probabilities
        if function not in ("softmax", "sigmoid", "none"):
            raise InvalidInputError(
                f"function_to_apply must be softmax, sigmoid or none; got {function!r}"
            )
        if self.logits is None:
            raise InvalidInputError(
                "raw scores are not available through the Triton backend (Triton answers "
                "probabilities only); leave out raw_scores and function_to_apply"
            )
        if function == "none":
            return self.logits.astype(np.float32, copy=True)
        return sigmoid(self.logits) if function == "sigmoid" else softmax(self.logits)

    def ranked(
        self, scores: npt.NDArray[np.float32], top_k: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """Each text's (label, score) pairs, highest first, the first ``top_k`` (all: None)."""
        out = []
        for row in scores.tolist():
            order = sorted(range(len(row)), key=lambda k: -row[k])[:top_k]
            out.append([(self.labels[k], row[k]) for k in order])
        return out

    @cached_property
    def best(self) -> list[int]:
        """Index of each text's most probable label (computed once)."""
        best: list[int] = self.probabilities.argmax(axis=1).tolist()
        return best

    def predicted(self) -> list[str]:
        return [self.labels[i] for i in self.best]

    def given(self) -> list[str]:
        """The labels the answer gives, all texts together: each text's most probable, or
        for a multi-label model every label at or above its threshold."""
        above = self.above_thresholds()
        if above is None:
            return self.predicted()
        return [label for labels in above for label in labels]

    def top_scores(self) -> list[float]:
        """Each text's highest score."""
        scores: list[float] = self.probabilities.max(axis=1).tolist()
        return scores

    def above_thresholds(self) -> list[list[str]] | None:
        """Each text's labels at or above their thresholds (None: not multi-label)."""
        if self.thresholds is None:
            return None
        above = self.probabilities >= np.asarray(self.thresholds, dtype=np.float32)
        return [[self.labels[k] for k in np.flatnonzero(row)] for row in above]


@dataclass
class Tensor:
    """A named tensor; BYTES tensors hold a flat list of ``bytes``."""

    name: str
    datatype: str
    shape: list[int]
    data: npt.NDArray[Any] | list[bytes]


@dataclass
class InferRequest:
    """An inference request, whatever the wire it came over.

    Attributes:
        model: Model name.
        version: Model version (None: the serving one).
        inputs: Input tensors, in request order.
        outputs: Names of the outputs asked for (empty: all).
        id: The request's ``id``, echoed in the response.
        timeout_s: The ``timeout`` parameter (Triton's, microseconds on the wire).
        transport_deadline_s: What the transport leaves (a gRPC deadline), if anything.
        truncation: The long-text policy the ``truncate`` and ``truncation_direction``
            parameters ask for (None: the model's).
    """

    model: str
    version: int | None
    inputs: list[Tensor]
    outputs: list[str] = field(default_factory=list)
    id: str | None = None
    timeout_s: float | None = None
    transport_deadline_s: float | None = None
    truncation: Truncation | None = None

    def by_name(self) -> dict[str, Tensor]:
        tensors: dict[str, Tensor] = {}
        for tensor in self.inputs:
            if tensor.name in tensors:
                raise InvalidInputError(f"input {tensor.name} is given twice")
            tensors[tensor.name] = tensor
        return tensors


@dataclass
class InferResponse:
    model: str
    version: int
    outputs: list[Tensor]
    id: str | None = None
    tokens: list[int] | None = None
    """A text model's token counts per text, before and after any cut (None: not counted)."""
    kept: list[int] | None = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass(frozen=True)
class ModelCard:
    """What a classifier is, for the APIs that describe one (TEI's ``/info``).

    Attributes:
        max_length: Most tokens per text (None: the backend does not say).
        truncation: The model's long-text policy (None: the backend does not say).
        max_texts: Most texts in one request.
    """

    name: str
    version: int
    labels: list[str]
    task: str
    max_length: int | None
    truncation: Truncation | None
    max_texts: int


@dataclass(frozen=True)
class ModelStatus:
    """One model in the repository index."""

    name: str
    version: int | None
    state: str
    reason: str = ""


class DataPlane(Protocol):
    """What every transport calls. Errors are :class:`~sentiserve.errors.SentiserveError`
    subclasses; each carries its HTTP status, and ``errors.ERROR_TABLE`` maps it to gRPC."""

    async def live(self) -> bool: ...

    async def ready(self) -> bool:
        """Whether the plane can serve inference now (the policy adds draining)."""
        ...

    async def model_ready(self, name: str, version: int | None = None) -> bool: ...

    def default_model(self) -> str:
        """The model a request that names none goes to (the friendly API's ``model``)."""
        ...

    async def metadata(self, name: str, version: int | None = None) -> ModelMetadata: ...

    async def model_config(self, name: str, version: int | None = None) -> Any:
        """Triton's ``ModelConfig`` message for ``name``, as Triton reports it."""
        ...

    async def card(self, name: str) -> ModelCard:
        """The serving version of text model ``name``: labels, task, length and policy."""
        ...

    async def infer(self, request: InferRequest) -> InferResponse: ...

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
        truncation: Truncation | None = None,
        max_tokens: int | None = None,
    ) -> Classification:
        """Label probabilities for each text (every classification API).

        Args:
            truncation: This request's long-text policy (None: the model's).
            max_tokens: Most tokens per text for this request (None: the model's limit).
        """
        ...

    async def index(self) -> list[ModelStatus]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def statistics(self, name: str | None, version: int | None = None) -> list[Any]:
        """Triton's model statistics objects (every model when ``name`` is None)."""
        ...

    async def close(self) -> None: ...
