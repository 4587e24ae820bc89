"""Calibrated probabilities: temperature scaling (Guo et al., 2017) and the expected
calibration error.

A fine-tuned classifier is usually over-confident: of the texts it calls "positive, 0.95",
fewer than 95% are. Temperature scaling divides every logit by one number T > 0 fitted on the
validation split (the T that minimises the negative log-likelihood), which keeps every
argmax, so no label changes, while the probabilities come to mean what they say. T is stored
in the manifest and applied by every serving path.

ECE: the texts are put in 15 equal-width bins by their top probability; ECE is the
average, weighted by bin size, of |accuracy - mean top probability| over the bins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ECE_BINS = 15
T_RANGE = (0.05, 20.0)
"""Where the temperature is searched (log-spaced); 1.0 means no change."""


def nll(logits: npt.NDArray[np.floating], labels: Sequence[int], temperature: float) -> float:
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(scaled).sum(axis=-1))
    picked = scaled[np.arange(len(labels)), np.asarray(labels)]
    return float(np.mean(log_z - picked))


def fit_temperature(logits: npt.NDArray[np.floating], labels: Sequence[int]) -> float:
    """The T in ``T_RANGE`` minimising the NLL of ``softmax(logits / T)`` (a golden-section
    search on log T: NLL is unimodal in T; deterministic, no optimiser library)."""
    if len(labels) == 0:
        raise ValueError("no examples to fit a temperature on")
    return _golden(lambda t: nll(logits, labels, t))


def bce(logits: npt.NDArray[np.floating], targets: npt.NDArray[np.floating], t: float) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / t)`` against 0/1 ``targets``."""
    x = logits.astype(np.float64) / t
    return float(np.mean(np.logaddexp(0.0, x) - targets * x))


def fit_label_temperatures(
    logits: npt.NDArray[np.floating], label_sets: Sequence[Sequence[int]]
) -> list[float]:
    """One temperature per label for a multi-label model (one sigmoid per label): each
    minimises that label's binary cross-entropy. A label's decision at its threshold of 0.5
    does not change (sigmoid(x / T) >= 0.5 exactly when x >= 0); its probability comes to
    mean what it says."""
    targets = np.asarray(label_sets, dtype=np.float64)
    if targets.size == 0:
        raise ValueError("no examples to fit temperatures on")
    return [
        _golden(functools.partial(bce, logits[:, k], targets[:, k]))
        for k in range(targets.shape[1])
    ]


def label_ece(
    probs: npt.NDArray[np.floating], label_sets: Sequence[Sequence[int]], bins: int = ECE_BINS
) -> float:
    """The ECE of every (text, label) probability taken as a yes/no forecast: binned by the
    probability, |share of yes - mean probability| per bin, weighted by bin size."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(label_sets, dtype=np.float64).ravel()
    index = np.clip(np.digitize(p, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() / len(p) * abs(y[members].mean() - p[members].mean())
    return float(total)


def _golden(loss: Callable[[float], float]) -> float:
    """The T in ``T_RANGE`` minimising ``loss`` (golden-section search on log T; the losses
    here are unimodal in T)."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(math.exp(a)), loss(math.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(math.exp(b))
    return round(math.exp((lo + hi) / 2), 6)


@dataclass(frozen=True)
class Reliability:
    """Per-bin counts, accuracy and mean confidence (for the ECE and its diagram)."""

    edges: list[float]
    counts: list[int]
    accuracy: list[float]
    confidence: list[float]

    @property
    def ece(self) -> float:
        total = sum(self.counts)
        if total == 0:
            return 0.0
        return float(
            sum(
                n / total * abs(acc - conf)
                for n, acc, conf in zip(self.counts, self.accuracy, self.confidence, strict=True)
                if n
            )
        )


def reliability(
    probs: npt.NDArray[np.floating], labels: Sequence[int], bins: int = ECE_BINS
) -> Reliability:
    """Bin the top probabilities in ``bins`` equal-width bins over [0, 1]."""
    top = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(top, edges[1:-1], right=True), 0, bins - 1)
    counts, accuracy, confidence = [], [], []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        counts.append(n)
        accuracy.append(float(right[members].mean()) if n else 0.0)
        confidence.append(float(top[members].mean()) if n else 0.0)
    return Reliability([float(e) for e in edges], counts, accuracy, confidence)


def ece(probs: npt.NDArray[np.floating], labels: Sequence[int], bins: int = ECE_BINS) -> float:
    """The expected calibration error of ``probs`` (see the module docstring)."""
    return reliability(probs, labels, bins).ece
