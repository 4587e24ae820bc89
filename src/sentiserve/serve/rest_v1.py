"""The friendly REST API: ``POST /v1/sentiment`` with text in, labels and scores out.

Served at the edge (:mod:`sentiserve.serve.edge`); the request and response documents are
the pydantic models below, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentiserve import DEFAULT_MODEL
from sentiserve.serve.edge import Call, Reply, Route, check_content_type
from sentiserve.serve.plane import DataPlane, requested_truncation

PATH = "/v1/sentiment"


class SentimentRequest(BaseModel):
    """One text (``text``) or several (``texts``); for models that compare two texts (NLI,
    cross-encoders), the second of each pair in ``text_pair`` or ``text_pairs``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="One text to classify.")
    texts: list[str] | None = Field(default=None, description="Several texts to classify.")
    text_pair: str | None = Field(default=None, description="With `text`: the pair's second text.")
    text_pairs: list[str] | None = Field(
        default=None, description="With `texts`: each pair's second text, in the same order."
    )
    model: str | None = Field(
        default=None,
        description=f"Model name in the repository (default: {DEFAULT_MODEL!r}, or the only "
        "model when the repository holds one).",
    )
    timeout_ms: int | None = Field(default=None, gt=0, description="Deadline for this request.")
    truncate: bool | None = Field(
        default=None,
        description="Cut a text longer than the model takes (true) or refuse it with its token "
        "count (false); left out: the model's long-text policy.",
    )
    truncation_direction: str | None = Field(
        default=None,
        description="Where to cut: right (keep the start, the default), left (keep the end) or "
        "head_tail (keep the first 128 tokens and the end).",
    )

    @model_validator(mode="after")
    def one_of(self) -> SentimentRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' and 'texts'")
        if self.text_pair is not None and self.text is None:
            raise ValueError("'text_pair' goes with 'text' (with 'texts', use 'text_pairs')")
        if self.text_pairs is not None and self.texts is None:
            raise ValueError("'text_pairs' goes with 'texts' (with 'text', use 'text_pair')")
        return self


class Result(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    labels: list[str] | None = Field(
        default=None,
        description="Multi-label models only: every label whose score reaches its threshold.",
    )
    tokens: int | None = Field(
        default=None, description="The text's tokens before any cut, special tokens included."
    )
    truncated: bool | None = Field(default=None, description="Whether the text was cut.")


class SentimentResponse(BaseModel):
    model: str
    version: int
    results: list[Result]


def route(plane: DataPlane) -> Route:
    """``POST /v1/sentiment``: classify one text or several; each result has the label, its
    probability, and the probability of every label."""

    async def sentiment(call: Call) -> Reply:
        check_content_type(call, "application/json")
        body = SentimentRequest.model_validate_json(call.body)  # the edge renders errors
        texts = [body.text] if body.text is not None else (body.texts or [])
        pairs = [body.text_pair] if body.text_pair is not None else body.text_pairs
        timeout = None if body.timeout_ms is None else body.timeout_ms / 1000
        name = body.model or plane.default_model()
        truncation = requested_truncation(body.truncate, body.truncation_direction)
        result = await plane.classify(
            name,
            texts,
            text_pairs=pairs,
            timeout_s=timeout,
            truncation=truncation,
            version=call.version(),
        )
        call.state["model"] = f"{result.model}:{result.version}"
        labels = result.labels
        results: list[dict[str, object]] = []
        for best, row in zip(result.best, result.probabilities.tolist(), strict=True):
            scores = dict(zip(labels, row, strict=True))
            results.append({"label": labels[best], "score": row[best], "scores": scores})
        if result.tokens is not None and result.truncated is not None:
            for item, tokens, cut in zip(results, result.tokens, result.truncated, strict=True):
                item["tokens"] = tokens
                item["truncated"] = cut
        above = result.above_thresholds()
        if above is not None:
            for item, given in zip(results, above, strict=True):
                item["labels"] = given
        doc = {"model": result.model, "version": result.version, "results": results}
        return Reply(200, json.dumps(doc, separators=(",", ":")).encode())

    return Route(
        PATH,
        sentiment,
        operation_id="sentiment",
        summary="Classify one text or several",
        description="Each result has the label, its probability, and every label's probability.",
        request_model=SentimentRequest,
        response_model=SentimentResponse,
        tag="sentiment",
    )
