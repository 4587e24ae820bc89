"""Drop-in ``POST /classify`` and ``POST /v1/classify`` for clients written for vLLM or
SGLang (OpenAI-style: ``{"model", "input"}`` in, ``{"id", "object": "list", "data": [{"index",
"label", "probs", "num_classes"}], "usage"}`` out) and, where the server is set to answer as
Infinity does (``--classify-format infinity``), for Infinity's clients on ``/classify``
(``{"object": "classify", "data": [[{"score", "label"}, ...]], ...}``).

Wire conversion only: one :meth:`DataPlane.classify` call per request, the one
``/v1/sentiment`` makes. ``truncate_prompt_tokens`` keeps the last k tokens of a text, as
vLLM does (``truncation_side`` "right" keeps the first k; -1 means the model's limit); a
request without it gets the model's long-text policy, where vLLM would refuse a long prompt.
"""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import (
    InvalidInputError,
    QueueFullError,
    SentiserveError,
)
from sentiserve.serve.edge import Call, Reply, Route, check_content_type
from sentiserve.serve.plane import DataPlane

INFINITY_DEFAULT_MODEL = "default/not-specified"
"""What Infinity's client sends as ``model`` when none is chosen."""


class ClassifyFormat(StrEnum):
    """How ``POST /classify`` answers (``/v1/classify`` always answers as vLLM)."""

    VLLM = "vllm"
    INFINITY = "infinity"


class ClassifyRequest(BaseModel):
    """vLLM's (and SGLang's) classification request; Infinity's is the same with
    ``raw_scores``. Fields neither uses are ignored, as they are there."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(default=None, description="Model name (left out: the default).")
    input: str | list[str] = Field(description="One text or several.")
    truncate_prompt_tokens: int | None = Field(
        default=None,
        ge=-1,
        description="Keep k tokens of each text (-1: the model's limit); left out: the "
        "model's long-text policy.",
    )
    truncation_side: Literal["left", "right"] | None = Field(
        default=None,
        description="Where truncate_prompt_tokens cuts: left (default, keeps the end) or right.",
    )
    raw_scores: bool = Field(default=False, description="Infinity: the logits, not probabilities.")
    user: str | None = None


class ClassificationData(BaseModel):
    index: int
    label: str
    probs: list[float]
    num_classes: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = 0
    prompt_tokens_details: None = None


class ClassificationResponse(BaseModel):
    """vLLM's answer."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassificationData]
    usage: Usage


class LabelScore(BaseModel):
    score: float
    label: str


class InfinityResponse(BaseModel):
    """Infinity's answer: per text, every label with its score, highest first."""

    object: Literal["classify"] = "classify"
    data: list[list[LabelScore]]
    model: str
    usage: Usage
    id: str
    created: int


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class OpenAIError(BaseModel):
    error: ErrorInfo


ERROR_TYPES = {
    HTTPStatus.UNAUTHORIZED: "AuthenticationError",
    HTTPStatus.NOT_FOUND: "NotFoundError",
    HTTPStatus.TOO_MANY_REQUESTS: "RateLimitError",
}


def openai_error(exc: SentiserveError) -> Reply:
    """The OpenAI-style error both vLLM and Infinity answer with:
    ``{"error": {"message", "type", "param", "code"}}``."""
    status = HTTPStatus(int(exc.status))
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        kind = "ServiceUnavailableError" if status == 503 else "InternalServerError"
    else:
        kind = ERROR_TYPES.get(status, "BadRequestError")
    doc = {"error": {"message": exc.message, "type": kind, "param": None, "code": int(status)}}
    headers = []
    if isinstance(exc, QueueFullError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    if status == HTTPStatus.UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    return Reply(int(status), json.dumps(doc).encode(), headers=headers)


def cut(request: ClassifyRequest) -> tuple[Truncation | None, int | None]:
    """The policy and token limit ``truncate_prompt_tokens`` and ``truncation_side`` ask for."""
    k = request.truncate_prompt_tokens
    if k is None:
        if request.truncation_side is not None:
            raise InvalidInputError("truncation_side needs truncate_prompt_tokens")
        return None, None
    if k == 0:
        raise InvalidInputError("truncate_prompt_tokens must be -1 or at least 1")
    side = Truncation.TRUNCATE if request.truncation_side == "right" else Truncation.TRUNCATE_LEFT
    return side, None if k == -1 else k


def routes(plane: DataPlane, answer: ClassifyFormat = ClassifyFormat.VLLM) -> list[Route]:
    """``POST /v1/classify`` (vLLM's answer) and ``POST /classify`` (``answer``'s)."""

    def handler(shape: ClassifyFormat) -> Any:
        async def classify(call: Call) -> Reply:
            check_content_type(call, "application/json")
            request = ClassifyRequest.model_validate_json(call.body)  # the edge renders errors
            texts = [request.input] if isinstance(request.input, str) else request.input
            name = request.model
            if name in (None, INFINITY_DEFAULT_MODEL):
                name = plane.default_model()
            truncation, max_tokens = cut(request)
            result = await plane.classify(
                name, texts, truncation=truncation, max_tokens=max_tokens, version=call.version()
            )
            call.state["model"] = f"{result.model}:{result.version}"
            tokens = sum(result.kept) if result.kept is not None else 0
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            created = int(time.time())
            scores = result.scores("none" if request.raw_scores else None)
            if shape is ClassifyFormat.INFINITY:
                data: Any = [
                    [{"score": score, "label": label} for label, score in row]
                    for row in result.ranked(scores)
                ]
                doc = {
                    "object": "classify",
                    "data": data,
                    "model": result.model,
                    "usage": usage,
                    "id": f"infinity-{os.urandom(16).hex()}",
                    "created": created,
                }
            else:
                labels = result.labels
                data = [
                    {"index": i, "label": labels[best], "probs": row, "num_classes": len(labels)}
                    for i, (best, row) in enumerate(zip(result.best, scores.tolist(), strict=True))
                ]
                doc = {
                    "id": f"classify-{os.urandom(16).hex()}",
                    "object": "list",
                    "created": created,
                    "model": result.model,
                    "data": data,
                    "usage": {**usage, "completion_tokens": 0, "prompt_tokens_details": None},
                }
            return Reply(200, json.dumps(doc, separators=(",", ":")).encode())

        return classify

    def route(path: str, shape: ClassifyFormat, operation_id: str) -> Route:
        peer = "Infinity" if shape is ClassifyFormat.INFINITY else "vLLM / SGLang"
        return Route(
            path,
            handler(shape),
            operation_id=operation_id,
            summary=f"Classify ({peer}'s API)",
            description=f"{peer}'s classification request and answer.",
            request_model=ClassifyRequest,
            response_model=InfinityResponse
            if shape is ClassifyFormat.INFINITY
            else ClassificationResponse,
            tag="compatibility",
            errors=openai_error,
            error_model=OpenAIError,
        )

    return [
        route("/v1/classify", ClassifyFormat.VLLM, "vllm_classify"),
        route("/classify", answer, "classify"),
    ]
