"""Value types shared by every data source."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

DEFAULT_LABELS: tuple[str, ...] = ("negative", "positive")
"""Label names of a binary sentiment model, in class-index order."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class Examples:
    """Texts with integer labels that index into ``label_names``; for multi-label data,
    ``label_sets`` holds each text's labels as 0/1 per label name (``labels`` are then
    placeholders)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...] = DEFAULT_LABELS
    label_sets: tuple[tuple[int, ...], ...] | None = None
    pairs: tuple[str, ...] | None = None
    """For models that compare two texts: each example's second text."""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.label_sets is not None and len(self.label_sets) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.label_sets)} label sets")
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.pairs)} text pairs")

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self) -> dict[str, int]:
        """Number of examples per label name, in label order."""
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}

    def take(self, n: int | None) -> Examples:
        """The first ``n`` examples (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        sets = None if self.label_sets is None else self.label_sets[:n]
        pairs = None if self.pairs is None else self.pairs[:n]
        return Examples(self.texts[:n], self.labels[:n], self.label_names, sets, pairs)

    def subset(self, indices: list[int]) -> Examples:
        sets = self.label_sets
        return Examples(
            tuple(self.texts[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            self.label_names,
            None if sets is None else tuple(sets[i] for i in indices),
            None if self.pairs is None else tuple(self.pairs[i] for i in indices),
        )


@dataclass(frozen=True)
class Corpus:
    """A named data source split into train, validation and test examples.

    The test split is held out: tuning reads the validation split only. A corpus that is
    not ``labelled`` holds texts only (its labels are placeholders): engines are compared
    with each other on it, never scored.
    """

    name: str
    train: Examples
    validation: Examples
    test: Examples
    description: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    labelled: bool = True

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.train.label_names

    def split(self, name: str) -> Examples:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        result: Examples = getattr(self, name)
        return result


def seeded_split(
    examples: Examples, *, test_size: int, validation_size: int, seed: int
) -> tuple[Examples, Examples, Examples]:
    """Shuffle with ``seed`` and cut off test and validation sets of the given sizes.

    The same examples and seed always give the same split, on any machine.
    """
    n = len(examples)
    if test_size + validation_size >= n:
        raise ValueError(
            f"cannot hold out {test_size} test and {validation_size} validation examples from {n}"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    test = examples.subset(order[:test_size])
    validation = examples.subset(order[test_size : test_size + validation_size])
    train = examples.subset(order[test_size + validation_size :])
    return train, validation, test


def holdout_sizes(n: int, *, max_test: int = 2000, fraction: float = 0.15) -> tuple[int, int]:
    """Test and validation sizes for a corpus of ``n`` examples with no split of its own."""
    test = max(1, min(max_test, int(n * fraction)))
    validation = max(1, min(max_test // 2, int(n * fraction / 2)))
    return test, validation
