"""check_ids: the raw engine model's token id rows, table-driven."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.errors import InvalidInputError, PayloadTooLargeError
from sentiserve.serve.plane import Limits
from sentiserve.serve.plane.tensors import check_ids


@pytest.fixture
def model(tiny_bert: Path) -> SimpleNamespace:
    """What check_ids reads of a loaded model: its tokenizer (the real one)."""
    tokenizer = Tokenizer(tiny_bert / "tokenizer.json", max_length=16)
    return SimpleNamespace(served=SimpleNamespace(tokenizer=tokenizer))


def ids(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def test_right_padded_rows_are_unpadded(model: SimpleNamespace) -> None:
    rows = ids([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = ids([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert check_ids(rows, mask, model, Limits()) == [[2, 7, 8, 3], [2, 9, 3]]  # type: ignore[arg-type]
    assert check_ids(rows, None, model, Limits()) == [[2, 7, 8, 3], [2, 9, 3, 0]]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "mask", "error", "message"),
    [
        (np.zeros((0, 3), np.int64), None, InvalidInputError, "shape"),
        (np.zeros((2,), np.int64), None, InvalidInputError, "shape"),
        (ids([[2, 3] * 10]), None, InvalidInputError, "exceeds the model's 16"),
        (ids([[2, -1, 3]]), None, InvalidInputError, "within 0.."),
        (ids([[2, 10_000, 3]]), None, InvalidInputError, "within 0.."),
        (ids([[2, 5, 3]]), ids([[1, 1]]), InvalidInputError, "shape of input_ids"),
        (ids([[2, 5, 3]]), ids([[1, 2, 1]]), InvalidInputError, "only 0 and 1"),
        (ids([[2, 5, 3]]), ids([[1, 0, 1]]), InvalidInputError, "right padding"),
        (ids([[2, 5, 3]]), ids([[0, 0, 0]]), InvalidInputError, "right padding"),
        (ids([[2, 3]] * 5), None, PayloadTooLargeError, "limit is 4"),
    ],
)
def test_bad_rows(
    model: SimpleNamespace,
    rows: np.ndarray,
    mask: np.ndarray | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        check_ids(rows, mask, model, Limits(max_texts=4))  # type: ignore[arg-type]
