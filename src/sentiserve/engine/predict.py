"""Offline prediction: many texts through one or more engines in length-sorted padded
batches.

Used wherever a whole data set is scored outside the server (``sentiserve evaluate``,
``sentiserve score``, the optimize checks), so they batch the way the server's
length-grouping batcher does. With several engines (one session each, like the server's
instances), batches run on them side by side, each engine used by one thread at a time.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine, Task, Temperature, activate
from sentiserve.engine.tokenizer import Tokenizer

SORTED_BATCH = 32
"""Most texts per batch for offline scoring; texts are sorted by length first."""
MAX_BATCH_TOKENS = 4096
"""Most padded tokens per batch: long texts go in smaller batches, so memory stays bounded."""


def sorted_batches(
    lengths: Sequence[int], batch_size: int = SORTED_BATCH, max_tokens: int = MAX_BATCH_TOKENS
) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted by length), each within
    ``batch_size`` texts and ``max_tokens`` padded tokens (a longer text runs alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[index]  # sorted: the newest is the longest so far
        if current and (len(current) == batch_size or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def predict_probabilities(
    engines: Engine | Sequence[Engine],
    tokenizer: Tokenizer,
    texts: Sequence[str],
    batch_size: int = SORTED_BATCH,
    temperature: Temperature = 1.0,
    task: Task | str = Task.SINGLE_LABEL,
    pairs: Sequence[str] | None = None,
) -> npt.NDArray[np.float32]:
    """Probabilities for ``texts`` in their order (softmax, or one sigmoid per label for a
    multi-label ``task``, of the logits over ``temperature``, the model's calibration)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    logits = predict_logits(engines, tokenizer, texts, batch_size, pairs)
    return activate(logits, task, temperature)


def predict_logits(
    engines: Engine | Sequence[Engine],
    tokenizer: Tokenizer,
    texts: Sequence[str],
    batch_size: int = SORTED_BATCH,
    pairs: Sequence[str] | None = None,
) -> npt.NDArray[np.float32]:
    """Logits for ``texts`` (each with its second text from ``pairs``, if given) in their
    order, computed in length-sorted padded batches on ``engines`` (one or several, side by
    side)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    pool = [engines] if not isinstance(engines, Sequence) else list(engines)
    encoded = tokenizer.encode(texts) if pairs is None else tokenizer.encode_pairs(texts, pairs)
    batches = sorted_batches([len(e) for e in encoded], batch_size)
    free: queue.SimpleQueue[Engine] = queue.SimpleQueue()
    for engine in pool:
        free.put(engine)

    def run(indices: list[int]) -> npt.NDArray[np.float32]:
        batch = tokenizer.pad([encoded[i] for i in indices])
        engine = free.get()
        try:
            return np.asarray(engine.infer(batch.input_ids, batch.attention_mask), np.float32)
        finally:
            free.put(engine)

    if len(pool) == 1:
        results = [run(b) for b in batches]
    else:
        # Longest batches first: the last ones to finish are then the shortest, so no
        # engine waits long at the end for another's long batch.
        batches.reverse()
        with ThreadPoolExecutor(len(pool), thread_name_prefix="predict") as workers:
            results = list(workers.map(run, batches))
    logits = np.empty((len(texts), results[0].shape[1]), dtype=np.float32)
    for indices, rows in zip(batches, results, strict=True):
        logits[indices] = rows
    return logits
