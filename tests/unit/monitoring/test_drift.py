"""Drift arithmetic: the reference a build records, the population stability index, and a
comparison of served answers with the reference (what `sentiserve drift` prints)."""

from __future__ import annotations

import math

import pytest

from sentiserve.monitoring import drift


def test_lengths_fall_in_the_metric_buckets() -> None:
    assert drift.length_bucket(1) == "8"
    assert drift.length_bucket(8) == "8"
    assert drift.length_bucket(9) == "16"
    assert drift.length_bucket(4096) == "4096"
    assert drift.length_bucket(4097) == "+Inf"


def test_the_reference_records_label_shares_lengths_and_cuts() -> None:
    ref = drift.reference(
        ["negative", "positive"], [0, 1, 1, 1], [10, 20, 30, 600], truncated=1, split="validation"
    )
    assert ref["split"] == "validation"
    assert ref["texts"] == 4
    assert ref["label_shares"] == {"negative": 0.25, "positive": 0.75}
    assert ref["input_tokens"]["p50"] == 25.0
    assert ref["input_token_shares"]["16"] == 0.25
    assert ref["input_token_shares"]["1024"] == 0.25
    assert math.isclose(sum(ref["input_token_shares"].values()), 1.0)
    assert ref["truncated_share"] == 0.25


def test_a_multi_label_reference_counts_each_label_given_per_text() -> None:
    ref = drift.reference(["a", "b", "c"], [[0, 1], [], [1]], [5, 5, 5], 0, "validation")
    assert ref["label_shares"] == {"a": 1 / 3, "b": 2 / 3, "c": 0.0}


def test_a_regression_reference_has_lengths_only() -> None:
    ref = drift.reference(["score"], None, [5, 7], 0, "test")
    assert "label_shares" not in ref
    assert ref["input_tokens"]["p50"] == 6.0


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    same = drift.psi({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5})
    small = drift.psi({"a": 0.5, "b": 0.5}, {"a": 0.55, "b": 0.45})
    large = drift.psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1})
    assert same == 0.0
    assert 0 < small < 0.1 < 0.25 < large
    # A bucket never seen on one side stays finite.
    assert math.isfinite(drift.psi({"a": 1.0}, {"b": 1.0}))


def test_compare_reports_shifts_psi_and_what_the_alerts_would_say() -> None:
    ref = drift.reference(["negative", "positive"], [0, 1] * 50, [12] * 100, 0, "validation")
    quiet = drift.compare("m", ref, {"negative": 52, "positive": 48}, 100, [12] * 100)
    assert quiet.alerts == []
    assert quiet.label_psi is not None
    assert quiet.label_psi < 0.01
    assert quiet.length_psi == pytest.approx(0.0)
    shifted = drift.compare("m", ref, {"negative": 80, "positive": 20}, 100, [40] * 100)
    changes = {s.name: s.change for s in shifted.labels}
    assert changes == pytest.approx({"negative": 0.3, "positive": -0.3})
    assert shifted.median_tokens == 40.0
    assert shifted.median_reference == 12.0
    assert len(shifted.alerts) == 3  # both labels, and the median length
    assert shifted.label_psi is not None
    assert shifted.label_psi > 0.25
    # A label the reference never saw is reported, not dropped.
    new = drift.compare("m", ref, {"negative": 50, "positive": 40, "other": 10}, 100, [])
    assert [s.name for s in new.labels] == ["negative", "positive", "other"]
    assert new.lengths == []
    assert new.length_psi is None
    assert new.median_tokens is None
