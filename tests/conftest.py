"""Shared fixtures: a tiny randomly initialised BERT with its own tokenizer, and toy data."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

POSITIVE_WORDS = ["good", "great", "wonderful", "moving", "brilliant", "fun", "charming", "love"]
NEGATIVE_WORDS = ["bad", "awful", "boring", "dull", "terrible", "mess", "tedious", "hate"]
FILLER = [
    "the",
    "film",
    "movie",
    "was",
    "a",
    "and",
    "plot",
    "acting",
    "story",
    "really",
    "it",
    "this",
    "of",
    "with",
    "script",
    "cast",
    "ending",
    "quite",
    "so",
    "very",
]


def toy_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Reviews whose label is decided by their sentiment words, of varied lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        length = rng.randint(3, 40)
        tokens = [rng.choice(FILLER) for _ in range(length)]
        for _ in range(max(1, length // 6)):
            tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(words))
        rows.append((" ".join(tokens), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT classifier with a word-level WordPiece vocabulary."""
    from sentiserve.train.tiny import tiny_bert

    words = sorted(set(POSITIVE_WORDS + NEGATIVE_WORDS + FILLER))
    tiny_bert(folder, words, {0: "negative", 1: "positive"})
    (folder / "README.txt").write_text(json.dumps({"what": "tiny random BERT for tests"}))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("toy") / "toy.csv", toy_texts(600))


def tiny_build_config(root: Path, tiny_bert: Path, toy_csv: Path) -> Any:
    """The tiny model's build settings, writing into ``root``."""
    from sentiserve.optimize.variants import OptimizeSettings
    from sentiserve.pipeline import BuildConfig
    from sentiserve.train.trainer import TrainConfig

    return BuildConfig(
        data=str(toy_csv),
        work_dir=root / "build",
        repository=root / "model_repository",
        train=TrainConfig(
            base_model=str(tiny_bert), epochs=3, batch_size=16, learning_rate=3e-3, max_length=64
        ),
        optimize=OptimizeSettings(
            invariance_texts=40,
            throughput_texts=64,
            calibration_texts=60,
            threads=1,
            variants=("fp32", "int8", "int8_dynamic"),
        ),
    )


@pytest.fixture(scope="session")
def tiny_build(tiny_bert: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete build folder and model repository from the tiny model on toy data."""
    from sentiserve.pipeline import build

    root = tmp_path_factory.mktemp("tiny-build")
    build(tiny_build_config(root, tiny_bert, toy_csv))
    return root
