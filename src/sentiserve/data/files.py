"""Local data: CSV, TSV, JSONL and Parquet files, and the aclImdb folder layout.

Files need a ``text`` and a ``label`` column. Labels are label names (matched without regard
to case) or integer class indices. Every problem is reported with the file and row.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sentiserve.data.types import (
    DEFAULT_LABELS,
    Corpus,
    Examples,
    holdout_sizes,
    seeded_split,
)
from sentiserve.errors import DataError

SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REQUIRED_COLUMNS = ("text", "label")
ACLIMDB_CLASSES = {"neg": "negative", "pos": "positive"}
SPLIT_SEED = 1234
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

Row = tuple[str, Any, Any]
"""Where a row is (for messages), its text, and its label."""


def resolve_label(value: Any, label_names: Sequence[str], where: str) -> int:
    """Map a label name or integer index onto a class index, or fail naming ``where``."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: label {value!r} is not a label name or class index")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip()
        lowered = [name.lower() for name in label_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        if not re.fullmatch(r"-?\d+", text):
            raise DataError(
                f"{where}: unknown label {text!r}; expected one of "
                f"{', '.join(label_names)} or a class index 0..{len(label_names) - 1}"
            )
        index = int(text)
    if not 0 <= index < len(label_names):
        raise DataError(
            f"{where}: class index {index} is out of range 0..{len(label_names) - 1} "
            f"(labels: {', '.join(label_names)})"
        )
    return index


def _check_columns(path: Path, columns: Iterable[Any], required: Sequence[str]) -> None:
    present = {str(c) for c in columns}
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(sorted(present)) or 'none'} (need {' and '.join(map(repr, required))})"
        )


def _rows_table(path: Path, kind: str, required: Sequence[str] = REQUIRED_COLUMNS) -> list[Row]:
    import pandas as pd

    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
            first_row = 1  # parquet has no header line: rows count from 1
        else:
            sep = "\t" if kind == "tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
            first_row = 2  # line 1 is the header
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as {kind.upper()}: {exc}") from exc
    except Exception as exc:  # pandas/pyarrow raise many parser-specific types
        raise DataError(f"{path}: cannot read as {kind.upper()}: {exc}") from exc
    _check_columns(path, frame.columns, required)
    where = "line" if kind != "parquet" else "row"
    labels = frame["label"] if "label" in required else [None] * len(frame)
    return [
        (f"{path}, {where} {i + first_row}", text, label)
        for i, (text, label) in enumerate(zip(frame["text"], labels, strict=True))
    ]


def _rows_jsonl(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[Row]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    rows: list[Row] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: expected a JSON object with {' and '.join(map(repr, required))}"
            )
        missing = [c for c in required if c not in record]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        rows.append((where, record["text"], record.get("label")))
    return rows


def examples_from_rows(rows: list[Row], label_names: Sequence[str], source: Path) -> Examples:
    """Validate rows into examples: no empty texts, known labels, at least two classes."""
    if not rows:
        raise DataError(f"{source}: no rows")
    texts: list[str] = []
    labels: list[int] = []
    for where, text, label in rows:
        if not isinstance(text, str):
            raise DataError(f"{where}: text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise DataError(f"{where}: empty text")
        texts.append(text.strip())
        labels.append(resolve_label(label, label_names, where))
    present = sorted(set(labels))
    if len(present) < 2:
        only = label_names[present[0]]
        raise DataError(
            f"{source}: every row has label {only!r}; a classifier needs at least two classes"
        )
    return Examples(tuple(texts), tuple(labels), tuple(label_names))


def _kind(path: Path, also: str = "an aclImdb folder") -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix!r}; use one of "
            f"{', '.join(sorted(SUFFIXES))} or {also}"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return kind


def read_file(path: Path, label_names: Sequence[str] = DEFAULT_LABELS) -> Examples:
    """Read one CSV, TSV, JSONL or Parquet file of ``text`` and ``label`` rows."""
    kind = _kind(path)
    rows = _rows_jsonl(path) if kind == "jsonl" else _rows_table(path, kind)
    return examples_from_rows(rows, label_names, path)


def read_texts(path: Path) -> tuple[str, ...]:
    """Texts without labels: a ``.txt`` file (one per line, blank lines skipped) or a CSV,
    TSV, JSONL or Parquet file with a ``text`` column."""
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read: {exc}") from exc
        rows: list[Row] = [
            (f"{path}, line {i}", t, None) for i, t in enumerate(lines, 1) if t.strip()
        ]
    else:
        kind = _kind(path, "a .txt file")
        rows = (
            _rows_jsonl(path, ("text",)) if kind == "jsonl" else _rows_table(path, kind, ("text",))
        )
    texts = []
    for where, text, _ in rows:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: text must be a non-empty string")
        texts.append(text.strip())
    if not texts:
        raise DataError(f"{path}: no texts")
    return tuple(texts)


def _read_aclimdb_split(folder: Path) -> Examples:
    rows: list[Row] = []
    for sub, label in ACLIMDB_CLASSES.items():
        class_dir = folder / sub
        if not class_dir.is_dir():
            raise DataError(f"{folder}: missing folder {sub}/ (aclImdb layout needs pos/ and neg/)")
        for file in sorted(class_dir.glob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{file}: cannot read: {exc}") from exc
            rows.append((str(file), " ".join(_HTML_BREAK.sub(" ", text).split()), label))
    # Interleave classes deterministically so that take(n) keeps both.
    random.Random(SPLIT_SEED).shuffle(rows)
    return examples_from_rows(rows, DEFAULT_LABELS, folder)


def is_aclimdb(path: Path) -> bool:
    return path.is_dir() and (path / "train" / "pos").is_dir()


def load_aclimdb(root: Path) -> Corpus:
    """The IMDb tarball's layout: ``train/{pos,neg}/*.txt`` and ``test/{pos,neg}/*.txt``."""
    full_train = _read_aclimdb_split(root / "train")
    if not (root / "test").is_dir():
        raise DataError(f"{root}: missing folder test/ (aclImdb layout)")
    test = _read_aclimdb_split(root / "test")
    _, validation_size = holdout_sizes(len(full_train))
    train, validation, _ = seeded_split(
        full_train, test_size=0, validation_size=validation_size, seed=SPLIT_SEED
    )
    return _local_corpus(root, root.name, f"aclImdb folder {root}", (train, validation, test))


def load_path(path: Path, label_names: Sequence[str] = DEFAULT_LABELS) -> Corpus:
    """A local file or aclImdb folder as a corpus with a seeded held-out split."""
    if path.is_dir():
        if is_aclimdb(path):
            return load_aclimdb(path)
        raise DataError(
            f"{path}: a folder must have the aclImdb layout (train/pos, train/neg, test/pos, "
            "test/neg); otherwise pass a CSV, TSV, JSONL or Parquet file"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    examples = read_file(path, label_names)
    test_size, validation_size = holdout_sizes(len(examples))
    if len(examples) < test_size + validation_size + 2:
        raise DataError(f"{path}: only {len(examples)} rows; need at least 5 to split")
    train, validation, test = seeded_split(
        examples, test_size=test_size, validation_size=validation_size, seed=SPLIT_SEED
    )
    return _local_corpus(path, path.stem, f"local file {path}", (train, validation, test))


def _local_corpus(
    source: Path, name: str, description: str, splits: tuple[Examples, Examples, Examples]
) -> Corpus:
    train, validation, test = splits
    return Corpus(
        name=name,
        train=train,
        validation=validation,
        test=test,
        description=description,
        provenance={"source": str(source.resolve()), "split_seed": str(SPLIT_SEED)},
    )


def read_label_sets(path: Path, label_names: Sequence[str]) -> Examples:
    """Read a multi-label file: ``text`` and either a ``labels`` column (a list of names, or
    names joined with ``|``; empty: none) or one 0/1 column per label name (the layout of
    Jigsaw's toxicity data). CSV, TSV, JSONL or Parquet."""
    names = list(label_names)
    frame = _frame(path)
    columns = {str(c) for c in frame.columns}
    if "text" not in columns:
        raise DataError(f"{path}: missing column text")
    per_label = "labels" not in columns and set(names) <= columns
    if "labels" not in columns and not per_label:
        raise DataError(
            f"{path}: a multi-label file needs a 'labels' column or one 0/1 column per label "
            f"({', '.join(names)})"
        )
    texts: list[str] = []
    sets: list[tuple[int, ...]] = []
    for i, row in enumerate(frame.to_dict("records")):
        where = f"{path}, row {i + 1}"
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: text must be a non-empty string")
        if per_label:
            flags = []
            for name in names:
                value = str(row[name]).strip()
                if value not in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
                    raise DataError(f"{where}: column {name} must be 0 or 1, got {value!r}")
                flags.append(int(value in ("1", "1.0", "True", "true")))
        else:
            given = row["labels"]
            if isinstance(given, str):
                given = [g for g in (part.strip() for part in given.split("|")) if g]
            try:
                given = list(given)
            except TypeError as exc:
                raise DataError(f"{where}: labels must be a list or names joined with |") from exc
            unknown = [g for g in given if g not in names]
            if unknown:
                raise DataError(
                    f"{where}: unknown label {unknown[0]!r}; expected some of {', '.join(names)}"
                )
            flags = [int(name in given) for name in names]
        texts.append(text.strip())
        sets.append(tuple(flags))
    if not texts:
        raise DataError(f"{path}: no rows")
    return Examples(tuple(texts), (0,) * len(texts), tuple(names), tuple(sets))


def load_label_sets(path: Path, label_names: Sequence[str]) -> Corpus:
    """A multi-label file (``read_label_sets``) with the same seeded held-out split as
    ``load_path``."""
    examples = read_label_sets(path, label_names)
    test_size, validation_size = holdout_sizes(len(examples))
    if len(examples) < test_size + validation_size + 2:
        raise DataError(f"{path}: only {len(examples)} rows; need at least 5 to split")
    splits = seeded_split(
        examples, test_size=test_size, validation_size=validation_size, seed=SPLIT_SEED
    )
    return _local_corpus(path, path.stem, f"multi-label file {path}", splits)


def read_scores(path: Path) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Texts and numeric targets (a regression model's data): ``text`` and a numeric
    ``label`` column, in a CSV, TSV, JSONL or Parquet file."""
    import math

    kind = _kind(path)
    rows = _rows_jsonl(path) if kind == "jsonl" else _rows_table(path, kind)
    texts: list[str] = []
    values: list[float] = []
    for where, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: text must be a non-empty string")
        try:
            value = float(label)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: label {label!r} is not a number") from exc
        if not math.isfinite(value):
            raise DataError(f"{where}: label {label!r} is not a finite number")
        texts.append(text.strip())
        values.append(value)
    if not texts:
        raise DataError(f"{path}: no rows")
    return tuple(texts), tuple(values)


def _frame(path: Path) -> Any:
    """A whole CSV, TSV, JSONL or Parquet file as a pandas frame (CSV cells as strings)."""
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if kind == "parquet":
            return pd.read_parquet(path)
        sep = "\t" if kind == "tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas/pyarrow raise many parser-specific types
        raise DataError(f"{path}: cannot read as {kind.upper()}: {exc}") from exc


def has_column(path: Path, column: str) -> bool:
    """Whether a data file has ``column``."""
    return column in {str(c) for c in _frame(path).columns}


def read_pairs(path: Path, label_names: Sequence[str]) -> Examples:
    """Labelled pairs for a model that compares two texts: ``text``, ``text_pair`` and
    ``label`` columns (labels as in ``read_file``)."""
    frame = _frame(path)
    missing = {"text", "text_pair", "label"} - {str(c) for c in frame.columns}
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    rows = [
        (f"{path}, row {i + 1}", r["text"], r["label"])
        for i, r in enumerate(frame.to_dict("records"))
    ]
    examples = examples_from_rows(rows, label_names, path)
    pairs = []
    for i, second in enumerate(frame["text_pair"]):
        if not isinstance(second, str) or not second.strip():
            raise DataError(f"{path}, row {i + 1}: text_pair must be a non-empty string")
        pairs.append(second.strip())
    return Examples(examples.texts, examples.labels, examples.label_names, None, tuple(pairs))
