"""Classification metrics: accuracy, F1 and the confusion matrix, in plain numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


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


def score_label_sets(
    truth: Sequence[Sequence[int]], predicted: Any, label_names: Sequence[str]
) -> Scores:
    """Multi-label scores from 0/1 label sets: ``accuracy`` is the share of texts whose whole
    label set is right, ``f1`` the macro average of each label's F1 (``f1_per_class``), and
    ``confusion`` holds each label's [true negatives, false positives, false negatives,
    true positives]."""
    real = np.asarray(truth, dtype=bool)
    guess = np.asarray(predicted, dtype=bool)
    if real.shape != guess.shape:
        raise ValueError(f"label sets of shape {real.shape} but predictions {guess.shape}")
    if not len(real):
        raise ValueError("cannot score zero examples")
    tp = (real & guess).sum(axis=0).astype(np.float64)
    fp = (~real & guess).sum(axis=0)
    fn = (real & ~guess).sum(axis=0)
    tn = (~real & ~guess).sum(axis=0)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.ones_like(tp), where=denominator > 0)
    names = list(label_names)
    return Scores(
        accuracy=float((real == guess).all(axis=1).mean()),
        f1=float(f1.mean()),
        f1_per_class={name: float(v) for name, v in zip(names, f1, strict=True)},
        confusion=[
            [int(a), int(b), int(c), int(d)] for a, b, c, d in zip(tn, fp, fn, tp, strict=True)
        ],
        labels=names,
        n=len(real),
    )


def average_precision(truth: Sequence[int], scores: Sequence[float]) -> float:
    """Average precision of ranking ``scores`` against 0/1 ``truth`` (the area under the
    precision-recall curve as a step function); 0.0 when there is no positive."""
    y = np.asarray(truth, dtype=bool)
    if not y.any():
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def spearman(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Spearman's rank correlation (ties broken by order: scores are continuous)."""
    if len(a) < 2:
        return 1.0
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 1.0
