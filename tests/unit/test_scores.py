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


def test_label_sets_and_average_precision() -> None:
    from sentiserve.evaluate.scores import average_precision, score_label_sets

    truth = [[1, 0], [1, 1], [0, 0], [0, 1]]
    guess = [[1, 0], [1, 0], [0, 0], [1, 1]]
    s = score_label_sets(truth, guess, ["a", "b"])
    assert s.accuracy == 0.5  # rows 0 and 2 are right as a whole
    assert s.f1_per_class == {"a": pytest.approx(0.8), "b": pytest.approx(2 / 3)}
    assert s.confusion == [[1, 1, 0, 2], [2, 0, 1, 1]]  # tn, fp, fn, tp per label
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 0], [0.5, 0.1]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        score_label_sets(truth, [[1]], ["a", "b"])
