"""The variant checks measure what they claim: a batch-dependent engine is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sentiserve.data.types import Examples
from sentiserve.engine.predict import predict_probabilities
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.optimize.checks import (
    INVARIANCE_TOLERANCE,
    VariantReport,
    batch_invariance,
    check_variant,
)
from sentiserve.optimize.variants import choose_defaults

TEXTS = ["good film", "bad", "the plot was a mess and the acting was dull " * 3, "fun"] * 5


class CountingEngine:
    """Logits from token counts: depends only on the text itself (batch-invariant)."""

    name = "counting"

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        n = attention_mask.sum(axis=1).astype(np.float32)
        return np.stack([n / 10, -n / 10], axis=1)


class BatchScaledEngine(CountingEngine):
    """Like dynamic int8: a scale computed over the whole padded batch leaks into results.
    (A deliberate fault that no real engine here produces on demand.)"""

    name = "batch-scaled"

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        logits = super().infer(input_ids, attention_mask)
        return logits * (1 + input_ids.shape[1] / 100)


@pytest.fixture
def tokenizer(tiny_bert: Path) -> Tokenizer:
    return Tokenizer(tiny_bert / "tokenizer.json", max_length=64)


def test_invariant_engine_measures_zero(tokenizer: Tokenizer) -> None:
    assert batch_invariance(CountingEngine(), tokenizer, TEXTS) == 0.0


class OneTextLeaksEngine(CountingEngine):
    """Batch-invariant for every text but one (the longest), whose result changes in any
    batch: the check must run every text inside a batch to see it. (A deliberate fault.)"""

    name = "one-text-leaks"

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        logits = super().infer(input_ids, attention_mask)
        lengths = attention_mask.sum(axis=1)
        if len(lengths) > 1:
            logits[lengths == LONGEST, 0] -= 8.0
        return logits


LONGEST = 40
"""Tokens of the one long text in ``MANY``."""
MANY = [f"good film number {'very ' * (i % 7)}fun" for i in range(99)] + [
    " ".join(["good"] * (LONGEST - 2))
]


def test_every_text_is_checked_inside_a_batch(tokenizer: Tokenizer) -> None:
    assert max(len(s) for s in tokenizer.encode(MANY)) == LONGEST
    assert sum(len(s) == LONGEST for s in tokenizer.encode(MANY)) == 1
    for seed in range(5):  # wherever the shuffle puts it
        assert batch_invariance(OneTextLeaksEngine(), tokenizer, MANY, seed=seed) > 0.1
    assert batch_invariance(CountingEngine(), tokenizer, MANY) == 0.0
    assert batch_invariance(CountingEngine(), tokenizer, []) == 0.0


def test_batch_dependent_engine_is_caught(tokenizer: Tokenizer) -> None:
    delta = batch_invariance(BatchScaledEngine(), tokenizer, TEXTS)
    assert delta > INVARIANCE_TOLERANCE
    held_out = Examples(tuple(TEXTS), tuple([0, 1] * 10))
    report, _ = check_variant(
        BatchScaledEngine(),
        tokenizer,
        held_out,
        reference_predictions=None,
        reference_accuracy=None,
        invariance_texts=TEXTS,
        throughput_texts=TEXTS,
    )
    assert not report.eligible
    assert "not batch-invariant" in report.note


def test_probabilities_come_back_in_input_order(tokenizer: Tokenizer) -> None:
    probs = predict_probabilities(CountingEngine(), tokenizer, TEXTS, batch_size=3)
    alone = np.concatenate([predict_probabilities(CountingEngine(), tokenizer, [t]) for t in TEXTS])
    assert np.array_equal(probs, alone)
    assert np.allclose(probs.sum(axis=1), 1.0)


def report(throughput: float, eligible: bool) -> VariantReport:
    return VariantReport(0.9, 0.9, 1.0, 0.0, throughput, eligible)


def test_defaults_follow_a_fixed_order_not_a_timing() -> None:
    reports = {"fp32": report(100, True), "int8": report(150, True)}
    assert choose_defaults(reports) == {"cpu": "int8", "cuda": "fp32"}
    # A slower int8 (timing noise on a tiny model) is still the default: builds reproduce.
    reports["int8"] = report(90, True)
    assert choose_defaults(reports)["cpu"] == "int8"
    reports["int8"] = report(300, False)
    assert choose_defaults(reports)["cpu"] == "fp32"
    reports["fp16"] = report(900, True)
    assert choose_defaults(reports)["cuda"] == "fp16"
