"""Classification metrics: accuracy, F1 and the confusion matrix, in plain numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scores:
    """How well predictions match labels.

    Attributes:
        accuracy: Fraction of correct predictions.
        f1: Macro-averaged F1 over the classes (for two classes, the mean of both F1s).
        f1_per_class: F1 of each class, by label name.
        confusion: ``confusion[i][j]`` counts examples of true class i predicted as j.
        n: Number of examples.
    """

    accuracy: float
    f1: float
    f1_per_class: dict[str, float]
    confusion: list[list[int]]
    labels: list[str]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]) -> Scores:
    """Score ``predictions`` against true ``labels`` (class indices)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("cannot score zero examples")
    k = len(label_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels), np.asarray(predictions)), 1)
    true_pos = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    denom = predicted + actual
    f1 = np.divide(2 * true_pos, denom, out=np.zeros(k), where=denom > 0)
    return Scores(
        accuracy=float(true_pos.sum() / len(labels)),
        f1=float(f1.mean()),
        f1_per_class={name: float(v) for name, v in zip(label_names, f1, strict=True)},
        confusion=confusion.tolist(),
        labels=list(label_names),
        n=len(labels),
    )
