"""Counts, label balance and length statistics of a corpus."""

from __future__ import annotations

from typing import Any

import numpy as np

from sentiserve.data.types import SPLITS, Corpus, Examples


def split_stats(examples: Examples) -> dict[str, Any]:
    """Size, label counts and word-length percentiles of one split."""
    words = np.array([len(t.split()) for t in examples.texts] or [0])
    return {
        "n": len(examples),
        "labels": examples.label_counts(),
        "words_mean": round(float(words.mean()), 1),
        "words_p50": int(np.percentile(words, 50)),
        "words_p95": int(np.percentile(words, 95)),
        "words_max": int(words.max()),
    }


def corpus_stats(corpus: Corpus) -> dict[str, Any]:
    return {
        "name": corpus.name,
        "description": corpus.description,
        "labels": list(corpus.label_names),
        "splits": {name: split_stats(corpus.split(name)) for name in SPLITS},
        "provenance": corpus.provenance,
    }
