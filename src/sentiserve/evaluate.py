"""Evaluate the served form of a model (repository tokenizer + engine) on labelled data."""

from __future__ import annotations

from collections.abc import Sequence

from sentiserve.data.types import Examples
from sentiserve.errors import DataError
from sentiserve.runtime import ServedModel
from sentiserve.scoring import Scores, score


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


def evaluate(model: ServedModel, examples: Examples) -> Scores:
    """Accuracy, F1 and confusion matrix of ``model`` on ``examples``."""
    if len(examples) == 0:
        raise DataError("no examples to evaluate")
    examples = align_labels(examples, model.labels)
    probs = model.probabilities(examples.texts)
    return score(list(examples.labels), probs.argmax(axis=1).tolist(), model.labels)
