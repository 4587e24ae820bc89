"""Evaluate the served form of a model (repository tokenizer + engine) on labelled data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiserve.data.types import Examples
from sentiserve.errors import DataError
from sentiserve.evaluate.calibration import Reliability, reliability
from sentiserve.evaluate.scores import Scores, average_precision, score, score_label_sets
from sentiserve.repository.served import ServedModel


def align_labels(examples: Examples, model_labels: Sequence[str]) -> Examples:
    """Re-index ``examples`` onto the model's label order, refusing labels it lacks."""
    if tuple(examples.label_names) == tuple(model_labels):
        return examples
    lowered = [name.lower() for name in model_labels]
    mapping: dict[int, int] = {}
    for i, name in enumerate(examples.label_names):
        if name.lower() not in lowered:
            raise DataError(
                f"data label {name!r} is not a label of the model ({', '.join(model_labels)})"
            )
        mapping[i] = lowered.index(name.lower())
    return Examples(examples.texts, tuple(mapping[y] for y in examples.labels), tuple(model_labels))


LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
"""Token-count buckets of the per-length accuracy table (upper bounds, inclusive)."""


@dataclass(frozen=True)
class Evaluation:
    """Scores of the served (calibrated) probabilities, their calibration, and accuracy per
    input length."""

    scores: Scores
    ece: float
    reliability: Reliability
    by_length: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.scores.to_dict(), "ece": round(self.ece, 6), "by_length": self.by_length}


def evaluate(model: ServedModel, examples: Examples) -> Evaluation:
    """Accuracy, F1, confusion matrix, ECE and accuracy per length of ``model`` on
    ``examples``, from the probabilities the server would answer (calibrated)."""
    if len(examples) == 0:
        raise DataError("no examples to evaluate")
    examples = align_labels(examples, model.labels)
    probs = model.probabilities(examples.texts)
    predicted = probs.argmax(axis=1).tolist()
    labels = list(examples.labels)
    lengths = [len(ids) for ids in model.tokenizer.encode(examples.texts)]
    edges = [0, *LENGTH_BUCKETS]
    if max(lengths) > edges[-1]:
        edges.append(max(lengths))
    by_length = []
    for low, high in zip(edges, edges[1:], strict=False):
        members = [i for i, n in enumerate(lengths) if low < n <= high]
        if members:
            right = sum(predicted[i] == labels[i] for i in members)
            by_length.append(
                {
                    "tokens": f"{low + 1}-{high}",
                    "n": len(members),
                    "accuracy": round(right / len(members), 4),
                }
            )
    curve = reliability(probs, labels)
    return Evaluation(score(labels, predicted, model.labels), curve.ece, curve, by_length)


def evaluate_label_sets(model: ServedModel, examples: Examples) -> dict[str, Any]:
    """A multi-label model on label sets, from the probabilities the server would answer:
    the whole-set accuracy, macro and per-label F1 at the manifest's thresholds, mean average
    precision over the labels (threshold-free), and the ECE of every (text, label)
    probability."""
    from sentiserve.evaluate.calibration import label_ece

    if examples.label_sets is None or len(examples) == 0:
        raise DataError("no label sets to evaluate")
    probs = model.probabilities(examples.texts)
    thresholds = np.asarray(model.version.manifest.thresholds_or_default(), dtype=np.float32)
    scores = score_label_sets(examples.label_sets, probs >= thresholds, model.labels)
    truth = np.asarray(examples.label_sets)
    precisions = {
        name: average_precision(truth[:, k].tolist(), probs[:, k].tolist())
        for k, name in enumerate(model.labels)
    }
    return {
        **scores.to_dict(),
        "average_precision": precisions,
        "mean_average_precision": float(np.mean(list(precisions.values()))),
        "ece": round(label_ece(probs, examples.label_sets), 6),
    }


def evaluate_scores(
    model: ServedModel, texts: Sequence[str], targets: Sequence[float]
) -> dict[str, Any]:
    """A regression model against numeric targets: mean squared error, and Spearman's and
    Pearson's correlations of the served scores with the targets."""
    from sentiserve.evaluate.scores import spearman

    if not texts:
        raise DataError("no examples to evaluate")
    served = model.probabilities(texts)[:, 0].astype(np.float64)
    truth = np.asarray(targets, dtype=np.float64)
    spread = float(served.std() * truth.std())
    pearson = (
        float(((served - served.mean()) * (truth - truth.mean())).mean() / spread)
        if spread
        else 0.0
    )
    return {
        "n": len(texts),
        "mse": float(np.mean((served - truth) ** 2)),
        "spearman": spearman(served, truth),
        "pearson": pearson,
    }


def reliability_png(evaluation: Evaluation, path: Path, title: str) -> None:
    """The reliability diagram: accuracy against confidence per bin, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = evaluation.reliability
    centres = [(a + b) / 2 for a, b in zip(curve.edges[:-1], curve.edges[1:], strict=True)]
    used = [i for i, n in enumerate(curve.counts) if n]
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.bar(
        [centres[i] for i in used],
        [curve.accuracy[i] for i in used],
        width=1 / len(curve.counts),
        alpha=0.6,
        edgecolor="black",
        label="accuracy",
    )
    axis.plot(
        [curve.confidence[i] for i in used],
        [curve.accuracy[i] for i in used],
        "o-",
        color="tab:red",
        label="per bin",
    )
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence (top probability)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{title}\nECE {evaluation.ece:.4f}")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
