"""What every engine variant must show before it may serve: accuracy, agreement with fp32,
batch invariance and throughput, all measured through the serving tokenizer."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.data.types import Examples
from sentiserve.engine.base import Engine, Task, activate
from sentiserve.engine.predict import predict_probabilities
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.evaluate.scores import score, score_label_sets, spearman

INVARIANCE_TOLERANCE = 1e-4
"""Largest change in any probability, alone versus batched, for a default-eligible engine."""
MAX_ACCURACY_LOSS = 0.01
"""Largest accuracy loss against fp32 for a default-eligible engine (one point)."""
MIN_AGREEMENT = 1 - MAX_ACCURACY_LOSS
MIN_RANK_CORRELATION = 0.99
"""A regression model's variant must rank texts as fp32 does: Spearman's correlation of
their scores at least this."""
"""Without labels, the smallest share of texts on which a default-eligible engine picks the
same label as fp32: a variant that disagrees on at most 1% of texts can lose at most one
accuracy point, whatever the labels would have been."""
INVARIANCE_BATCH = 33
"""Texts per batch in the invariance check (a text plus 32 others)."""
THROUGHPUT_BATCH = 8


def batch_invariance(
    engine: Engine,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    seed: int = 0,
    task: Task | str = Task.SINGLE_LABEL,
    pairs: Sequence[str] | None = None,
) -> float:
    """Largest |Δp| for any text run alone versus inside a padded batch of
    ``INVARIANCE_BATCH`` texts.

    Every text runs alone once and inside one batch: the texts are shuffled and cut into
    batches of ``INVARIANCE_BATCH`` (the last filled up with random others), so batch-mates,
    positions and padding vary, and each batch checks all of its members. (One batch per
    text, as this check first did, ran 33 times the sequences for the same comparison: 75%
    of the default build's optimize stage, about 140 of its 190 s.)
    """
    encoded = tokenizer.encode(texts) if pairs is None else tokenizer.encode_pairs(texts, pairs)
    if not encoded:
        return 0.0
    singles = [tokenizer.pad([seq]) for seq in encoded]
    alone = np.concatenate(
        [activate(engine.infer(b.input_ids, b.attention_mask), task) for b in singles]
    )
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    worst = 0.0
    for start in range(0, len(order), INVARIANCE_BATCH):
        members = order[start : start + INVARIANCE_BATCH]
        missing = INVARIANCE_BATCH - len(members)
        if missing > 0:
            chosen = set(members)
            others = [i for i in range(len(encoded)) if i not in chosen]
            members += rng.sample(others, min(missing, len(others)))
        batch = tokenizer.pad([encoded[i] for i in members])
        inside = activate(engine.infer(batch.input_ids, batch.attention_mask), task)
        worst = max(worst, float(np.abs(inside - alone[members]).max()))
    return worst


def throughput(
    engine: Engine,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = THROUGHPUT_BATCH,
    repeats: int = 3,
    pairs: Sequence[str] | None = None,
) -> float:
    """Sequences per second over ``texts`` (or pairs) in length-sorted batches; the median
    of repeats."""
    encoded = tokenizer.encode(texts) if pairs is None else tokenizer.encode_pairs(texts, pairs)
    encoded = sorted(encoded, key=len)
    batches = [
        tokenizer.pad(encoded[i : i + batch_size]) for i in range(0, len(encoded), batch_size)
    ]
    engine.infer(batches[0].input_ids, batches[0].attention_mask)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            engine.infer(b.input_ids, b.attention_mask)
        rates.append(len(encoded) / (time.perf_counter() - start))
    return float(np.median(rates))


@dataclass(frozen=True)
class VariantReport:
    """How one engine variant did on the held-out split.

    Attributes:
        accuracy, f1: On the held-out split, through the serving tokenizer (None when the
            texts have no labels).
        agreement: Fraction of labels equal to the fp32 reference's.
        max_batch_delta: Largest |Δp| alone versus in a batch of 33 (see batch_invariance).
        throughput: Sequences per second, batch 8, length-sorted, on this machine.
        eligible: Whether it may be a default engine (invariant and within 1 point of fp32).
        device: Where the numbers were measured.
        gate: What eligibility was judged on: ``accuracy`` (labelled texts),
            ``agreement`` with fp32 (texts without labels), or ``rank correlation`` with
            fp32 (regression: ``agreement`` then holds Spearman's correlation).
    """

    accuracy: float | None
    f1: float | None
    agreement: float
    max_batch_delta: float
    throughput: float
    eligible: bool
    device: str = "cpu"
    note: str = ""
    gate: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_variant(
    engine: Engine,
    tokenizer: Tokenizer,
    held_out: Examples,
    *,
    reference_predictions: npt.NDArray[Any] | None,
    reference_accuracy: float | None,
    invariance_texts: Sequence[str],
    throughput_texts: Sequence[str],
    device: str = "cpu",
    labelled: bool = True,
    invariance_pairs: Sequence[str] | None = None,
    throughput_pairs: Sequence[str] | None = None,
    task: Task | str = Task.SINGLE_LABEL,
    thresholds: Sequence[float] | None = None,
) -> tuple[VariantReport, npt.NDArray[Any]]:
    """Measure one variant; returns its report and its predictions (for agreement): the
    label index per text, or for a multi-label ``task`` each label's yes/no per text (a
    text agrees when its whole label set does).

    With ``labelled`` False the held-out labels are placeholders: nothing is scored, and
    eligibility rests on agreement with the fp32 reference (``MIN_AGREEMENT``)."""
    probs = predict_probabilities(
        engine, tokenizer, held_out.texts, task=task, pairs=held_out.pairs
    )
    if task == Task.REGRESSION:
        return _check_regression(
            engine,
            tokenizer,
            probs[:, 0],
            reference_predictions,
            (invariance_texts, invariance_pairs),
            (throughput_texts, throughput_pairs),
            device,
        )
    if task == Task.MULTI_LABEL:
        cut = np.asarray(thresholds or [0.5] * probs.shape[1], dtype=np.float32)
        predictions = (probs >= cut).astype(np.int64)
    else:
        predictions = probs.argmax(axis=1).astype(np.int64)
    if labelled and task == Task.MULTI_LABEL:
        assert held_out.label_sets is not None
        s = score_label_sets(held_out.label_sets, predictions, held_out.label_names)
    elif labelled:
        s = score(list(held_out.labels), predictions.tolist(), held_out.label_names)
    else:
        s = None
    agreement = (
        1.0
        if reference_predictions is None
        else float(
            (predictions == reference_predictions).reshape(len(predictions), -1).all(-1).mean()
        )
    )
    delta = batch_invariance(engine, tokenizer, invariance_texts, task=task, pairs=invariance_pairs)
    rate = throughput(engine, tokenizer, throughput_texts, pairs=throughput_pairs)
    notes = []
    if delta > INVARIANCE_TOLERANCE:
        notes.append(f"not batch-invariant (|Δp| {delta:.2g} > {INVARIANCE_TOLERANCE:g})")
    if s is not None:
        measure = s.f1 if task == Task.MULTI_LABEL else s.accuracy
        loss = 0.0 if reference_accuracy is None else reference_accuracy - measure
        close = loss <= MAX_ACCURACY_LOSS
        if not close:
            what = "macro F1" if task == Task.MULTI_LABEL else "accuracy"
            notes.append(f"loses {100 * loss:.2f} {what} points")
    else:
        close = agreement >= MIN_AGREEMENT
        if not close:
            notes.append(f"agrees with fp32 on only {100 * agreement:.1f}% of texts")
    report = VariantReport(
        accuracy=None if s is None else s.accuracy,
        f1=None if s is None else s.f1,
        agreement=agreement,
        max_batch_delta=delta,
        throughput=rate,
        eligible=delta <= INVARIANCE_TOLERANCE and close,
        device=device,
        note="; ".join(notes),
        gate=("macro F1" if task == Task.MULTI_LABEL else "accuracy")
        if s is not None
        else "agreement",
    )
    return report, predictions


def _check_regression(
    engine: Engine,
    tokenizer: Tokenizer,
    scores: npt.NDArray[Any],
    reference: npt.NDArray[Any] | None,
    invariance: tuple[Sequence[str], Sequence[str] | None],
    timed: tuple[Sequence[str], Sequence[str] | None],
    device: str,
) -> tuple[VariantReport, npt.NDArray[Any]]:
    """A regression variant: ranked as fp32 ranks the texts, and batch-invariant
    (``invariance`` and ``timed``: texts, and their pairs if any)."""
    agreement = 1.0 if reference is None else spearman(scores, reference)
    delta = batch_invariance(
        engine, tokenizer, invariance[0], task=Task.REGRESSION, pairs=invariance[1]
    )
    notes = []
    if delta > INVARIANCE_TOLERANCE:
        notes.append(f"not batch-invariant (|Δscore| {delta:.2g} > {INVARIANCE_TOLERANCE:g})")
    if agreement < MIN_RANK_CORRELATION:
        notes.append(f"ranks texts unlike fp32 (Spearman {agreement:.4f})")
    report = VariantReport(
        accuracy=None,
        f1=None,
        agreement=agreement,
        max_batch_delta=delta,
        throughput=throughput(engine, tokenizer, timed[0], pairs=timed[1]),
        eligible=delta <= INVARIANCE_TOLERANCE and agreement >= MIN_RANK_CORRELATION,
        device=device,
        note="; ".join(notes),
        gate="rank correlation",
    )
    return report, scores
