"""What every inference engine offers: padded token ids in, logits out."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class Engine(Protocol):
    """An inference engine. Implementations are thread-compatible, not thread-safe:
    one caller at a time (the server's batcher owns its engine)."""

    name: str

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Logits, shape ``[batch, num_labels]``, for a padded batch."""
        ...


def softmax(logits: npt.NDArray[np.float32], temperature: float = 1.0) -> npt.NDArray[np.float32]:
    """Row-wise softmax of ``logits / temperature`` (the model's calibration; 1.0: none),
    computed stably in float64 and returned as float32."""
    scaled = logits.astype(np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: npt.NDArray[np.float32] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs
