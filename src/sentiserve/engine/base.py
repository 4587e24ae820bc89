"""What every inference engine offers: padded token ids in, logits out."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Engine(Protocol):
    """An inference engine. Implementations are thread-compatible, not thread-safe: one
    caller at a time (the server's batcher owns its engine), unless the engine says it
    runs side by side (:func:`runs_side_by_side`)."""

    name: str

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Logits, shape ``[batch, num_labels]``, for a padded batch."""
        ...


def runs_side_by_side(engine: Engine) -> bool:
    """Whether several threads may call ``engine.infer`` at once, each computing on its own
    thread, so that instances can share it (a one-thread ONNX Runtime session on the CPU:
    one copy of the weights for every instance)."""
    return bool(getattr(engine, "side_by_side", False))


Temperature = float | npt.NDArray[np.float64]
"""What logits are divided by: one temperature, or one per label (multi-label models)."""


def softmax(
    logits: npt.NDArray[np.float32], temperature: Temperature = 1.0
) -> npt.NDArray[np.float32]:
    """Row-wise softmax of ``logits / temperature`` (the model's calibration; 1.0: none),
    computed stably in float64 and returned as float32."""
    scaled = logits.astype(np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: npt.NDArray[np.float32] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


class Task(StrEnum):
    """How a classifier's logits become scores (Hugging Face's ``problem_type`` values)."""

    SINGLE_LABEL = "single_label_classification"
    """One label per text: a softmax over the labels."""
    MULTI_LABEL = "multi_label_classification"
    """Any number of labels per text: one sigmoid per label, each against its threshold."""
    REGRESSION = "regression"
    """One output, served as it is (a score: similarity, relevance, a rating)."""


def sigmoid(
    logits: npt.NDArray[np.float32], temperature: Temperature = 1.0
) -> npt.NDArray[np.float32]:
    """Element-wise logistic of ``logits / temperature``, stable for large |logits|."""
    scaled = logits.astype(np.float64) / temperature
    out: npt.NDArray[np.float32] = (0.5 * (1.0 + np.tanh(0.5 * scaled))).astype(np.float32)
    return out


def activate(
    logits: npt.NDArray[np.float32], task: Task | str, temperature: Temperature = 1.0
) -> npt.NDArray[np.float32]:
    """Scores from logits as ``task`` defines them: every serving path calls this. A
    regression output is its own score (no temperature)."""
    if task == Task.MULTI_LABEL:
        return sigmoid(logits, temperature)
    if task == Task.REGRESSION:
        return logits.astype(np.float32, copy=True)
    return softmax(logits, temperature)
