"""The compatibility codecs' pure parts: the truncation fields every API shares, TEI's input
grammar, the peers' error answers, and scores as transformers' pipeline computes them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sentiserve.engine.tokenizer import TextTooLongError, Truncation
from sentiserve.errors import (
    BadGatewayError,
    InvalidInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    UnauthorizedError,
    UnavailableError,
)
from sentiserve.serve.plane import Classification, EmptyInputError, requested_truncation
from sentiserve.serve.rest_classify import ClassifyRequest, cut, openai_error
from sentiserve.serve.rest_tei import tei_error, tei_inputs


@pytest.mark.parametrize(
    ("truncate", "direction", "want"),
    [
        (None, None, None),
        (True, None, Truncation.TRUNCATE),
        (False, None, Truncation.REJECT),
        (None, "left", Truncation.TRUNCATE_LEFT),
        (True, "Left", Truncation.TRUNCATE_LEFT),
        (True, "Right", Truncation.TRUNCATE),
        (None, "head_tail", Truncation.HEAD_TAIL),
    ],
)
def test_the_truncation_fields(truncate: bool | None, direction: str | None, want: object) -> None:
    assert requested_truncation(truncate, direction) == want


@pytest.mark.parametrize(
    ("truncate", "direction", "message"),
    [
        (None, "middle", "one of right, left, head_tail"),
        (False, "left", "needs truncate true"),
        ("yes", None, "true or false"),
        (None, 3, "must be a string"),
    ],
)
def test_bad_truncation_fields(truncate: object, direction: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        requested_truncation(truncate, direction)


def test_tei_input_grammar() -> None:
    assert tei_inputs("a") == (["a"], None, False)
    assert tei_inputs(["a"]) == (["a"], None, False)
    assert tei_inputs(["a", "b"]) == (["a"], ["b"], False), "two strings are one pair"
    assert tei_inputs([["a"], ["b"]]) == (["a", "b"], None, True)
    assert tei_inputs([["a", "x"], ["b", "y"]]) == (["a", "b"], ["x", "y"], True)
    with pytest.raises(EmptyInputError):
        tei_inputs([])
    with pytest.raises(InvalidInputError, match=r"\[text\] or \[text, text_pair\]"):
        tei_inputs(["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="mix"):
        tei_inputs([["a"], ["b", "y"]])


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidInputError("bad"), 422, "Validation"),
        (TextTooLongError("text 0 has 900 tokens", 900, 512), 422, "Validation"),
        (EmptyInputError("text 0 is empty"), 400, "Empty"),
        (PayloadTooLargeError("too many"), 413, "Validation"),
        (QueueFullError("busy"), 429, "Overloaded"),
        (BadGatewayError("triton"), 424, "Backend"),
        (UnavailableError("draining"), 503, "Unhealthy"),
        (UnauthorizedError("key"), 401, "Unauthorized"),
        (ModelNotFoundError("nope"), 404, "Validation"),
    ],
)
def test_tei_errors(error: Exception, status: int, kind: str) -> None:
    reply = tei_error(error)  # type: ignore[arg-type]
    assert reply.status == status
    assert json.loads(reply.body) == {"error": error.message, "error_type": kind}  # type: ignore[attr-defined]
    if status == 429:
        assert dict(reply.headers)[b"retry-after"]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidInputError("bad"), 400, "BadRequestError"),
        (ModelNotFoundError("nope"), 404, "NotFoundError"),
        (UnauthorizedError("key"), 401, "AuthenticationError"),
        (UnavailableError("draining"), 503, "ServiceUnavailableError"),
        (BadGatewayError("triton"), 502, "InternalServerError"),
    ],
)
def test_openai_errors(error: Exception, status: int, kind: str) -> None:
    reply = openai_error(error)  # type: ignore[arg-type]
    assert reply.status == status
    doc = json.loads(reply.body)
    assert doc == {"error": {"message": str(error), "type": kind, "param": None, "code": status}}


def test_truncate_prompt_tokens() -> None:
    def of(**fields: object) -> tuple[Truncation | None, int | None]:
        return cut(ClassifyRequest.model_validate({"input": "a", **fields}))

    assert of() == (None, None)
    assert of(truncate_prompt_tokens=10) == (Truncation.TRUNCATE_LEFT, 10), "vLLM keeps the end"
    assert of(truncate_prompt_tokens=10, truncation_side="right") == (Truncation.TRUNCATE, 10)
    assert of(truncate_prompt_tokens=-1) == (Truncation.TRUNCATE_LEFT, None)
    with pytest.raises(InvalidInputError, match="-1 or at least 1"):
        of(truncate_prompt_tokens=0)
    with pytest.raises(InvalidInputError, match="needs truncate_prompt_tokens"):
        of(truncation_side="left")


def test_scores_as_the_pipeline_computes_them() -> None:
    logits = np.array([[2.0, -1.0, 0.5]], dtype=np.float32)
    served = np.array([[0.7, 0.1, 0.2]], dtype=np.float32)  # calibrated: not a softmax of logits
    result = Classification("m", 1, ["a", "b", "c"], served, logits=logits)
    assert result.scores() is served
    np.testing.assert_allclose(result.scores("none"), logits)
    soft = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(result.scores("softmax"), soft, rtol=1e-6)
    np.testing.assert_allclose(result.scores("sigmoid"), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    ((first, second, third),) = result.ranked(served)
    assert [first[0], second[0], third[0]] == ["a", "c", "b"]
    assert [first[1], second[1], third[1]] == pytest.approx([0.7, 0.2, 0.1])
    assert [label for label, _ in result.ranked(served, top_k=1)[0]] == ["a"]
    with pytest.raises(InvalidInputError, match="softmax, sigmoid or none"):
        result.scores("relu")
    without = Classification("m", 1, ["a", "b", "c"], served)
    with pytest.raises(InvalidInputError, match="not available through the Triton backend"):
        without.scores("none")
