"""Prediction drift: what a model answered on held-out data (its *reference*, stored in the
manifest by the build), and how far what it answers in production has moved from it.

The same numbers are used three ways: the server exports the reference as gauges so
Prometheus can alert on a moved label share or input length (``deploy/monitoring/rules``);
``sentiserve drift`` compares a payload log with it offline; and the length buckets here are
the ``sentiserve_input_tokens`` histogram's, so all three bin lengths alike.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096)
"""Upper edges (tokens per text, special tokens included) of the length histogram; a last
bucket holds the longer texts."""
QUANTILES = (0.5, 0.9, 0.99)
"""Length quantiles the reference records."""
LABEL_SHARE_MARGIN = 0.15
"""How far (absolute) a label's share may move from the reference before the drift alert
fires: the same number as in the alert rule (deploy/monitoring/rules)."""
LENGTH_FACTOR = 2.0
"""The median input length may grow to this many times the reference's before the alert."""
PSI_SMOOTHING = 1e-4
"""Added to every share before the PSI's logarithm, so an empty bucket is finite."""


def length_bucket(tokens: int) -> str:
    """The histogram bucket ``tokens`` falls in, named by its upper edge (``+Inf`` last)."""
    for edge in TOKEN_BUCKETS:
        if tokens <= edge:
            return str(edge)
    return "+Inf"


def bucket_names() -> list[str]:
    return [*(str(e) for e in TOKEN_BUCKETS), "+Inf"]


def length_shares(tokens: Sequence[int]) -> dict[str, float]:
    """Each length bucket's share of ``tokens`` (every bucket named, 0 when empty)."""
    return shares(collections.Counter(length_bucket(int(n)) for n in tokens), bucket_names())


def shares(counts: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """Each name's share of the total (0 for a name never counted; all 0 when empty)."""
    total = float(sum(counts.get(n, 0.0) for n in names))
    return {n: (counts.get(n, 0.0) / total if total else 0.0) for n in names}


def label_counts(
    labels: Sequence[str], given: Sequence[Sequence[int]] | Sequence[int]
) -> dict[str, int]:
    """How often each label was given: ``given`` holds each text's label index, or for a
    multi-label model each text's indices at or above their thresholds."""
    counts = dict.fromkeys(labels, 0)
    for item in given:
        for index in [item] if isinstance(item, int | np.integer) else item:
            counts[labels[int(index)]] += 1
    return counts


def reference(
    labels: Sequence[str],
    given: Sequence[Sequence[int]] | Sequence[int] | None,
    tokens: Sequence[int],
    truncated: int,
    split: str,
) -> dict[str, Any]:
    """The manifest's ``reference``: what the served engine answered on ``split``.

    Args:
        given: Each text's label index (or indices, multi-label); None for a regression
            model, which gives no labels.
        tokens: Each text's tokens before any cut.
        truncated: How many of the texts were cut.
    """
    lengths = np.asarray(tokens, dtype=np.float64)
    out: dict[str, Any] = {
        "split": split,
        "texts": len(tokens),
        "input_tokens": {f"p{round(q * 100)}": float(np.quantile(lengths, q)) for q in QUANTILES},
        "input_token_shares": length_shares(tokens),
        "truncated_share": truncated / len(tokens) if tokens else 0.0,
    }
    if given is not None:
        counts = label_counts(labels, given)
        # A text's share: a multi-label text may give several labels, or none.
        out["label_shares"] = {k: v / len(tokens) for k, v in counts.items()}
    return out


def psi(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Population stability index of ``actual`` against ``expected`` (shares over the same
    names): sum of (a - e) * ln(a / e). Below 0.1 is usually read as stable, above 0.25 as
    a real shift."""
    total = 0.0
    for name in expected.keys() | actual.keys():
        e = expected.get(name, 0.0) + PSI_SMOOTHING
        a = actual.get(name, 0.0) + PSI_SMOOTHING
        total += (a - e) * math.log(a / e)
    return total


@dataclass(frozen=True)
class Shift:
    """One row of a drift report: a label's (or length bucket's) share in the reference
    and in what was served."""

    name: str
    expected: float
    actual: float

    @property
    def change(self) -> float:
        return self.actual - self.expected


@dataclass(frozen=True)
class DriftReport:
    """What was served, against the reference.

    Attributes:
        texts: Texts compared (answers in the log).
        labels: Each label's share, reference and served.
        lengths: Each length bucket's share (empty when the log has no token counts).
        label_psi, length_psi: The population stability index of each.
        median_tokens: The served median length (None without token counts), beside the
            reference's ``median_reference``.
    """

    model: str
    texts: int
    labels: list[Shift]
    lengths: list[Shift]
    label_psi: float | None
    length_psi: float | None
    median_tokens: float | None
    median_reference: float | None

    @property
    def alerts(self) -> list[str]:
        """What the Prometheus alerts would say of these numbers."""
        out = [
            f"label {s.name!r}: share {s.actual:.1%} against {s.expected:.1%} in the reference "
            f"(moved more than {LABEL_SHARE_MARGIN:.0%})"
            for s in self.labels
            if abs(s.change) > LABEL_SHARE_MARGIN
        ]
        if (
            self.median_tokens is not None
            and self.median_reference
            and self.median_tokens > LENGTH_FACTOR * self.median_reference
        ):
            out.append(
                f"median input length {self.median_tokens:g} tokens, more than "
                f"{LENGTH_FACTOR:g}x the reference's {self.median_reference:g}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "texts": self.texts,
            "labels": [s.__dict__ | {"change": s.change} for s in self.labels],
            "lengths": [s.__dict__ | {"change": s.change} for s in self.lengths],
            "label_psi": self.label_psi,
            "length_psi": self.length_psi,
            "median_tokens": self.median_tokens,
            "median_reference": self.median_reference,
            "alerts": self.alerts,
        }


def compare(
    model: str,
    ref: Mapping[str, Any],
    given: Mapping[str, int],
    texts: int,
    tokens: Sequence[int],
) -> DriftReport:
    """Compare served answers with a manifest ``reference``.

    Args:
        given: How often each label was given.
        texts: How many texts were answered.
        tokens: Each answered text's tokens before any cut (empty when not counted).
    """
    expected_labels: Mapping[str, float] = ref.get("label_shares") or {}
    names = list(expected_labels) + sorted(set(given) - set(expected_labels))
    served = {n: (given.get(n, 0) / texts if texts else 0.0) for n in names}
    label_rows = [Shift(n, expected_labels.get(n, 0.0), served[n]) for n in names]
    length_rows: list[Shift] = []
    length_psi = median = None
    if tokens:
        actual = length_shares(tokens)
        expected = ref.get("input_token_shares") or {}
        length_rows = [Shift(b, expected.get(b, 0.0), actual[b]) for b in actual]
        length_psi = psi(expected, actual) if expected else None
        median = float(np.median(np.asarray(tokens, dtype=np.float64)))
    median_ref = (ref.get("input_tokens") or {}).get("p50")
    return DriftReport(
        model=model,
        texts=texts,
        labels=label_rows,
        lengths=[r for r in length_rows if r.expected or r.actual],
        label_psi=psi(expected_labels, served) if expected_labels and texts else None,
        length_psi=length_psi,
        median_tokens=median,
        median_reference=None if median_ref is None else float(median_ref),
    )
