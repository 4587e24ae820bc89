"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from sentiserve.engine.base import softmax
from sentiserve.evaluate.calibration import ece, fit_temperature, nll, reliability


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Logits whose softmax is right about 80% of the time but says ~95%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.8
    predicted = np.where(correct, labels, 1 - labels)
    logits = np.zeros((n, 2))
    logits[np.arange(n), predicted] = rng.normal(3.0, 0.5, n)
    return logits.astype(np.float32), labels.tolist()


def test_temperature_fixes_overconfidence_and_keeps_every_label() -> None:
    logits, labels = overconfident()
    before = ece(softmax(logits), labels)
    temperature = fit_temperature(logits, labels)
    after = ece(softmax(logits, temperature), labels)
    assert temperature > 1.5, "an over-confident model needs a temperature above 1"
    assert before > 0.1
    assert after < 0.03
    assert (softmax(logits, temperature).argmax(1) == softmax(logits).argmax(1)).all()
    assert nll(logits, labels, temperature) < nll(logits, labels, 1.0)


def test_a_calibrated_model_keeps_a_temperature_near_one() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (6000, 2)).astype(np.float32)
    labels = [int(rng.random() < p) for p in softmax(logits)[:, 1]]
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)
    assert ece(softmax(logits), labels) < 0.03


def test_reliability_bins_by_top_probability() -> None:
    probs = np.array([[0.05, 0.95], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]], dtype=np.float32)
    curve = reliability(probs, [1, 1, 1, 0], bins=15)
    assert sum(curve.counts) == 4
    assert len(curve.edges) == 16
    # four bins of one text each: 0.95 right; 0.9 wrong; 0.7 right; 0.55 wrong
    expected = (abs(1 - 0.95) + abs(0 - 0.9) + abs(1 - 0.7) + abs(0 - 0.55)) / 4
    assert curve.ece == pytest.approx(expected, abs=1e-6)


def test_no_examples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(np.zeros((0, 2), np.float32), [])


def test_label_temperatures_undo_overconfidence_and_keep_decisions() -> None:
    from sentiserve.engine.base import sigmoid
    from sentiserve.evaluate.calibration import fit_label_temperatures, label_ece

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(4000, 2))
    truth = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    logits = (z * np.array([3.0, 0.5])).astype(np.float32)  # over-, then under-confident
    temperatures = fit_label_temperatures(logits, truth.tolist())
    assert temperatures[0] == pytest.approx(3.0, rel=0.1)
    assert temperatures[1] == pytest.approx(0.5, rel=0.1)
    before = label_ece(sigmoid(logits), truth.tolist())
    after = label_ece(sigmoid(logits, np.asarray(temperatures)), truth.tolist())
    assert after < before / 3
    assert ((sigmoid(logits, np.asarray(temperatures)) >= 0.5) == (logits >= 0)).all()
