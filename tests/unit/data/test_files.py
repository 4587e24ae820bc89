"""Local data files: every format reads, every bad case fails naming the file and row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiserve.data import load_corpus
from sentiserve.data.files import load_path, read_file
from sentiserve.errors import DataError

ROWS = [
    ("a fine film", "positive"),
    ("a dull film", "negative"),
    ("loved it", "positive"),
    ("hated it", "negative"),
]


def write(path: Path, rows: list[tuple[object, object]], kind: str) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["text", "label"])
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_reads_every_format(tmp_path: Path, kind: str) -> None:
    examples = read_file(write(tmp_path / f"d.{kind}", ROWS, kind))
    assert examples.texts == tuple(t for t, _ in ROWS)
    assert examples.labels == (1, 0, 1, 0)
    assert examples.label_names == ("negative", "positive")


def test_integer_labels_and_case_insensitive_names(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [("x", 0), ("y", "POSITIVE"), ("z", "1")], "jsonl")
    assert read_file(path).labels == (0, 1, 1)


def test_custom_label_set(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", [("x", "joy"), ("y", "anger"), ("z", "fear")], "csv")
    examples = read_file(path, ("anger", "fear", "joy"))
    assert examples.labels == (2, 0, 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,label\nok,positive\n", r"missing column\(s\) text"),
        ("text,label\nfine,positive\n   ,negative\n", r"line 3: empty text"),
        ("text,label\nfine,positive\nbad,meh\n", r"line 3: unknown label 'meh'"),
        ("text,label\nfine,positive\nbad,7\n", r"line 3: class index 7 is out of range"),
        ("text,label\nfine,positive\ngood,positive\n", r"every row has label 'positive'"),
        ("text,label\n", r"no rows"),
    ],
)
def test_bad_csv_names_file_and_row(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_file(path)
    assert str(path) in str(info.value)


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "oops"\n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: invalid JSON"):
        read_file(path)
    path.write_text('{"text": "ok", "label": 1}\n["not", "an", "object"]\n')
    with pytest.raises(DataError, match=r"line 2: expected a JSON object"):
        read_file(path)
    path.write_text('{"text": "ok", "label": 1}\n{"label": 0}\n')
    with pytest.raises(DataError, match=r"line 2: missing field\(s\) text"):
        read_file(path)
    path.write_text('{"text": 5, "label": 1}\n')
    with pytest.raises(DataError, match=r"line 1: text must be a string"):
        read_file(path)


def test_unreadable_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01not parquet at all")
    with pytest.raises(DataError, match=r"garbage.parquet: cannot read as PARQUET"):
        read_file(garbage)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9", "label": 1}\n')
    with pytest.raises(DataError, match=r"latin.jsonl: cannot read"):
        read_file(latin)
    with pytest.raises(DataError, match=r"unsupported file type '.txt'"):
        read_file(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"no such file or folder"):
        load_corpus(str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match=r"aclImdb layout"):
        load_corpus(str(tmp_path))


def test_file_corpus_is_split_reproducibly(toy_csv: Path) -> None:
    first, second = load_path(toy_csv), load_path(toy_csv)
    assert first.test.texts == second.test.texts
    assert len(first.train) + len(first.validation) + len(first.test) == 600
    assert not set(first.test.texts) & set(first.train.texts) - {""}


def test_aclimdb_layout(tmp_path: Path) -> None:
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for cls, words in (("pos", "great fun"), ("neg", "awful mess")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(12):
                (folder / f"{i}_7.txt").write_text(f"{words}<br /><br />review {i}")
    corpus = load_corpus(str(root))
    assert len(corpus.test) == 24
    assert len(corpus.train) + len(corpus.validation) == 24
    assert "<br" not in corpus.test.texts[0]
    positives = [t for t, y in zip(corpus.test.texts, corpus.test.labels, strict=True) if y == 1]
    assert all("great fun" in t for t in positives)
    (root / "test" / "neg" / "0_7.txt").write_bytes(b"\xff\xfe bad bytes")
    with pytest.raises(DataError, match=r"0_7.txt: cannot read"):
        load_corpus(str(root))
