from __future__ import annotations

import pytest

from sentiserve.evaluate.scores import score


def test_scores_match_hand_computation() -> None:
    s = score([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ("negative", "positive"))
    assert s.accuracy == pytest.approx(0.6)
    assert s.confusion == [[1, 1], [1, 2]]
    # negative: P=1/2 R=1/2 F1=0.5; positive: P=2/3 R=2/3 F1=2/3
    assert s.f1_per_class["positive"] == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx((0.5 + 2 / 3) / 2)


def test_absent_class_scores_zero_without_dividing_by_zero() -> None:
    s = score([1, 1], [1, 1], ("negative", "positive"))
    assert s.f1_per_class == {"negative": 0.0, "positive": 1.0}


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 labels but 1"):
        score([0, 1], [0], ("a", "b"))
