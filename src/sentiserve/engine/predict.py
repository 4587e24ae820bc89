"""Offline prediction: many texts through an engine in length-sorted padded batches.

Used wherever a whole data set is scored outside the server (``sentiserve evaluate``, the
optimize checks), so they batch the way the server's length-grouping batcher does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine, softmax
from sentiserve.engine.tokenizer import Tokenizer

SORTED_BATCH = 32
"""Batch size for offline scoring; texts are sorted by length first."""


def predict_probabilities(
    engine: Engine, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = SORTED_BATCH
) -> npt.NDArray[np.float32]:
    """Probabilities for ``texts`` in their order, computed in length-sorted padded batches."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    encoded = tokenizer.encode(texts)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    chunks = []
    for start in range(0, len(order), batch_size):
        batch = tokenizer.pad([encoded[i] for i in order[start : start + batch_size]])
        chunks.append(softmax(engine.infer(batch.input_ids, batch.attention_mask)))
    sorted_probs = np.concatenate(chunks)
    probs = np.empty_like(sorted_probs)
    probs[order] = sorted_probs
    return probs
