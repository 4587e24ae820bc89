"""The friendly REST API: ``POST /v1/sentiment`` with text in, labels and scores out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentiserve.serve.dataplane import InvalidInputError, TextClassifier


class SentimentRequest(BaseModel):
    """One text (``text``) or several (``texts``)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="One text to classify.")
    texts: list[str] | None = Field(default=None, description="Several texts to classify.")
    model: str = Field(default="sentiment", description="Model name in the repository.")
    timeout_ms: int | None = Field(default=None, gt=0, description="Deadline for this request.")

    @model_validator(mode="after")
    def one_of(self) -> SentimentRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' and 'texts'")
        return self


class Result(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class SentimentResponse(BaseModel):
    model: str
    version: int
    results: list[Result]


def router(plane: TextClassifier) -> APIRouter:
    api = APIRouter(tags=["sentiment"])

    @api.post("/v1/sentiment", response_model=SentimentResponse)
    async def sentiment(body: SentimentRequest, request: Request) -> SentimentResponse:
        """Classify one text or several; each result has the label, its probability, and
        the probability of every label."""
        texts = [body.text] if body.text is not None else body.texts
        if texts is None:  # pragma: no cover - the validator guarantees one of them
            raise InvalidInputError("no texts given")
        timeout = None if body.timeout_ms is None else body.timeout_ms / 1000
        result = await plane.classify(body.model, texts, timeout_s=timeout)
        request.state.model = f"{result.model}:{result.version}"
        results = []
        for row in result.probabilities:
            best = int(row.argmax())
            results.append(Result(
                label=result.labels[best], score=float(row[best]),
                scores={name: float(p) for name, p in zip(result.labels, row, strict=True)},
            ))  # fmt: skip
        return SentimentResponse(model=result.model, version=result.version, results=results)

    return api
