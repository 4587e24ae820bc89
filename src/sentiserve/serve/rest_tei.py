"""Drop-in routes for clients written for Hugging Face's servers: text-embeddings-inference
(TEI: ``POST /predict``, ``POST /``, ``GET /info``) and the Hugging Face Inference API's text
classification (``POST /models/{model}``, and ``POST /`` where
``huggingface_hub.InferenceClient(base_url=...)`` sends it).

Wire conversion only: each request becomes one :meth:`DataPlane.classify` call, the same one
``/v1/sentiment`` makes, so labels and probabilities are the same. ``POST /`` tells the two
apart the way their clients do: the Inference API's body always has ``parameters`` (empty when
unset), TEI's never does.

Where the peers' behaviour and ours differ: a request that leaves ``truncate`` out gets the
model's long-text policy (TEI's ``--auto-truncate`` decides there); ``truncate: false``
refuses a long text with 422 naming its token count and the limit, as TEI does.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, RootModel

from sentiserve import __version__
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    QueueFullError,
    SentiserveError,
)
from sentiserve.serve.edge import Call, Reply, Route, check_content_type, token_headers
from sentiserve.serve.plane import (
    Classification,
    DataPlane,
    EmptyInputError,
    requested_truncation,
)
from sentiserve.serve.policy import Policy

Pair = list[str]


class TeiRequest(BaseModel):
    """TEI's ``/predict`` body."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] | list[list[str]] = Field(
        description="A text, a pair [text, text_pair], or a batch of [text] and "
        "[text, text_pair] lists."
    )
    truncate: bool | None = Field(
        default=None,
        description="Cut a long text (true) or refuse it (false); left out: the model's policy.",
    )
    truncation_direction: str | None = Field(
        default=None, description="right (default), left, or head_tail (ours)."
    )
    raw_scores: bool = Field(default=False, description="The logits instead of probabilities.")


class HfParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    function_to_apply: str | None = Field(
        default=None,
        description="sigmoid, softmax or none, applied to the logits as transformers' "
        "pipeline does; left out: the served (calibrated) probabilities.",
    )
    top_k: int | None = Field(default=None, ge=1, description="Only the k best labels.")


class HfPair(BaseModel):
    text: str
    text_pair: str | None = None


class HfRequest(BaseModel):
    """The Hugging Face Inference API's text-classification body."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] | HfPair = Field(
        description="A text, several, or {text, text_pair} for a pair."
    )
    parameters: HfParameters = Field(default_factory=HfParameters)


class Prediction(BaseModel):
    label: str
    score: float


class TeiResponse(RootModel[list[Prediction] | list[list[Prediction]]]):
    """Every label with its score, highest first: one list for one input, a list per input
    for a batch."""


class HfResponse(RootModel[list[list[Prediction]]]):
    """A list per input of every label (or the ``top_k`` best) with its score, highest first."""


class RootRequest(RootModel[HfRequest | TeiRequest]):
    """An Inference API body (with ``parameters``) or a TEI one."""


class RootResponse(RootModel[list[list[Prediction]] | list[Prediction]]):
    """The Inference API's answer, or TEI's."""


class TeiError(BaseModel):
    error: str
    error_type: str


def tei_error(exc: SentiserveError) -> Reply:
    """TEI's error answer: ``{"error", "error_type"}`` with its status codes (422 for a bad
    or too long input, 400 for an empty one, 413 too large, 429 overloaded, 424 backend)."""
    status, kind = int(exc.status), "Validation"
    if isinstance(exc, EmptyInputError):
        status, kind = 400, "Empty"
    elif isinstance(exc, QueueFullError):
        status, kind = 429, "Overloaded"
    elif isinstance(exc, PayloadTooLargeError):
        status = 413
    elif exc.status == HTTPStatus.SERVICE_UNAVAILABLE:
        kind = "Unhealthy"
    elif exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        status, kind = 424, "Backend"
    elif exc.status == HTTPStatus.BAD_REQUEST:
        status = 422
    elif exc.status == HTTPStatus.UNAUTHORIZED:
        kind = "Unauthorized"
    body = json.dumps({"error": exc.message, "error_type": kind}).encode()
    headers = []
    if isinstance(exc, QueueFullError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    if exc.status == HTTPStatus.UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    return Reply(status, body, headers=headers)


def tei_inputs(
    inputs: str | list[str] | list[list[str]],
) -> tuple[list[str], list[str] | None, bool]:
    """Texts, second texts (None: no pairs) and whether the request was a batch, from TEI's
    grammar: a string; a list of one or two strings (one text, or one pair); a list of such
    lists (a batch, where pairs and single texts may not mix)."""
    if isinstance(inputs, str):
        return [inputs], None, False
    if not inputs:
        raise EmptyInputError("inputs is an empty list")
    if isinstance(inputs[0], str):
        sequences: list[list[str]] = [list(inputs)]
        batch = False
    else:
        sequences, batch = inputs, True
    sizes = {len(s) for s in sequences}
    if not sizes <= {1, 2}:
        raise InvalidInputError("each input must be [text] or [text, text_pair]")
    if len(sizes) > 1:
        raise InvalidInputError("a batch cannot mix single texts and pairs")
    texts = [s[0] for s in sequences]
    pairs = [s[1] for s in sequences] if sizes == {2} else None
    return texts, pairs, batch


def timing_headers(
    result: Classification, texts: list[str], start: float
) -> list[tuple[bytes, bytes]]:
    """TEI's compute headers (milliseconds, characters, tokens) and ours: each text's tokens
    before cutting and whether it was cut, comma-separated in text order."""
    elapsed = str(round((time.perf_counter() - start) * 1000)).encode()
    headers = [
        (b"x-compute-time", elapsed),
        (b"x-total-time", elapsed),
        (b"x-compute-characters", str(sum(len(t) for t in texts)).encode()),
    ]
    return headers + token_headers(result.tokens, result.kept)


def predictions(
    result: Classification, function: str | None, top_k: int | None = None
) -> list[list[dict[str, Any]]]:
    ranked = result.ranked(result.scores(function), top_k)
    return [[{"label": label, "score": score} for label, score in row] for row in ranked]


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def routes(plane: DataPlane) -> list[Route]:
    """TEI's ``POST /predict`` and ``POST /``, the Inference API's ``POST /models/{model}``."""

    async def tei(call: Call, request: TeiRequest) -> Reply:
        start = time.perf_counter()
        texts, pairs, batch = tei_inputs(request.inputs)
        truncation = requested_truncation(request.truncate, request.truncation_direction)
        result = await plane.classify(
            plane.default_model(),
            texts,
            text_pairs=pairs,
            truncation=truncation,
            version=call.version(),
        )
        call.state["model"] = f"{result.model}:{result.version}"
        rows = predictions(result, "none" if request.raw_scores else None)
        body = _json(rows if batch else rows[0])
        return Reply(200, body, headers=timing_headers(result, texts + (pairs or []), start))

    async def hf(call: Call, request: HfRequest, model: str) -> Reply:
        start = time.perf_counter()
        inputs = request.inputs
        pairs = None
        if isinstance(inputs, HfPair):
            texts = [inputs.text]
            pairs = None if inputs.text_pair is None else [inputs.text_pair]
        else:
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
        result = await plane.classify(model, texts, text_pairs=pairs, version=call.version())
        call.state["model"] = f"{result.model}:{result.version}"
        options = request.parameters
        rows = predictions(result, options.function_to_apply, options.top_k)
        return Reply(200, _json(rows), headers=timing_headers(result, texts + (pairs or []), start))

    async def predict(call: Call) -> Reply:
        check_content_type(call, "application/json")
        return await tei(call, TeiRequest.model_validate_json(call.body))

    async def models(call: Call) -> Reply:
        check_content_type(call, "application/json")
        return await hf(call, HfRequest.model_validate_json(call.body), call.path_params["model"])

    async def root(call: Call) -> Reply:
        check_content_type(call, "application/json")
        try:
            doc = json.loads(call.body)
        except ValueError as exc:
            raise InvalidInputError(f"the body is not JSON: {exc}") from None
        if isinstance(doc, dict) and "parameters" in doc:
            return await hf(call, HfRequest.model_validate_json(call.body), plane.default_model())
        return await tei(call, TeiRequest.model_validate_json(call.body))

    common: dict[str, Any] = {"errors": tei_error, "error_model": TeiError}
    return [
        Route(
            "/predict",
            predict,
            operation_id="tei_predict",
            summary="Classify (text-embeddings-inference's API)",
            description="TEI's request and answer: every label with its score, highest first.",
            request_model=TeiRequest,
            response_model=TeiResponse,
            tag="compatibility",
            **common,
        ),
        Route(
            "/",
            root,
            operation_id="tei_or_hf_root",
            summary="Classify (Hugging Face InferenceClient(base_url) or TEI)",
            description="A body with `parameters` is answered as the Inference API does "
            "(a list per input), one without as TEI's /predict.",
            request_model=RootRequest,
            response_model=RootResponse,
            tag="compatibility",
            **common,
        ),
        Route(
            "/models/{model}",
            models,
            operation_id="hf_text_classification",
            summary="Classify (Hugging Face Inference API)",
            description="The Inference API's text-classification request and answer.",
            request_model=HfRequest,
            response_model=HfResponse,
            tag="compatibility",
            **common,
        ),
    ]


def info_router(plane: DataPlane, policy: Policy) -> APIRouter:
    """TEI's ``GET /info``: the default model, its labels, limits and long-text policy."""
    api = APIRouter(tags=["compatibility"])

    @api.get("/info")
    async def info() -> dict[str, Any]:
        card = await plane.card(plane.default_model())
        max_texts = card.max_texts
        return {
            "model_id": card.name,
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {
                "classifier": {
                    "id2label": {str(i): label for i, label in enumerate(card.labels)},
                    "label2id": {label: i for i, label in enumerate(card.labels)},
                }
            },
            "max_concurrent_requests": policy.limits.max_in_flight,
            "max_input_length": card.max_length,
            "max_batch_tokens": None if card.max_length is None else card.max_length * max_texts,
            "max_batch_requests": None,
            "max_client_batch_size": max_texts,
            "auto_truncate": card.truncation is not None and card.truncation != Truncation.REJECT,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "sentiserve": {
                "version": card.version,
                "task": card.task,
                "truncation": None if card.truncation is None else card.truncation.value,
            },
        }

    return api
