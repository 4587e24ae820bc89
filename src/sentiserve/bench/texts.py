"""The texts a benchmark sends: rt held-out reviews, synthetic long reviews, or a file."""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from sentiserve.errors import DataError

LONG_WORDS = (40, 220)
"""Synthetic long reviews have this many words: about 50 to 270 WordPiece tokens, so their
lengths spread over the whole window of the default model (256 tokens) instead of all being
cut to it, which is what makes batching them by length matter."""

LONG_SEED = 20241127


@dataclass(frozen=True)
class BenchTexts:
    name: str
    texts: tuple[str, ...]
    synthetic: bool = False
    description: str = ""


def rt_texts(cache_dir: Path | None = None) -> BenchTexts:
    """The rt held-out (test) split: what the model never saw in training."""
    from sentiserve.data import load_corpus

    test = load_corpus("rt", cache_dir=cache_dir).test
    return BenchTexts("rt", test.texts, description=f"rt held-out reviews ({len(test)})")


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def compose_long(
    source: tuple[str, ...], count: int = 500, seed: int = LONG_SEED
) -> tuple[str, ...]:
    """Deterministic long reviews: rt sentences drawn with a fixed seed until each text has
    at least a random target (within LONG_WORDS) of words. Synthetic: the sentences come
    from different reviews."""
    sentences = [s.strip() for text in source for s in _SENTENCE.split(text) if s.strip()]
    if not sentences:
        raise DataError("no sentences to compose long texts from")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        target = rng.randint(*LONG_WORDS)
        words = 0
        parts: list[str] = []
        while words < target:
            sentence = rng.choice(sentences)
            parts.append(sentence)
            words += len(sentence.split())
        out.append(" ".join(parts))
    return tuple(out)


def long_texts(cache_dir: Path | None = None) -> BenchTexts:
    texts = compose_long(rt_texts(cache_dir).texts)
    return BenchTexts(
        "long",
        texts,
        synthetic=True,
        description=f"SYNTHETIC: {len(texts)} texts of {LONG_WORDS[0]}-{LONG_WORDS[1]}+ words "
        f"composed from rt sentences (seed {LONG_SEED})",
    )


def file_texts(path: Path) -> BenchTexts:
    """One text per line (.txt and anything else), or a ``text`` column (.csv, .tsv, .jsonl)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    texts: list[str] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if suffix in (".csv", ".tsv"):
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
                if "text" not in (reader.fieldnames or []):
                    raise DataError(f"{path}: no 'text' column (columns: {reader.fieldnames})")
                texts = [row["text"] for row in reader if (row["text"] or "").strip()]
            elif suffix == ".jsonl":
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
                    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                        raise DataError(f"{path}:{number}: expected an object with a 'text' string")
                    texts.append(row["text"])
            else:
                texts = [line.rstrip("\n") for line in handle if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not texts:
        raise DataError(f"{path}: no texts")
    return BenchTexts(path.name, tuple(texts), description=f"{len(texts)} texts from {path}")


def load_texts(spec: str, cache_dir: Path | None = None) -> BenchTexts:
    """``rt``, ``long``, or a path (``cache_dir``: where the rt corpus is cached)."""
    if spec == "rt":
        return rt_texts(cache_dir)
    if spec == "long":
        return long_texts(cache_dir)
    return file_texts(Path(spec))
