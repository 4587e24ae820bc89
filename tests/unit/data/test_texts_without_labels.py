"""Texts without labels: the built-in mixed-domain sample and ``read_texts``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiserve.data.files import read_texts
from sentiserve.data.sample import SENTENCES, sample_texts, unlabelled_corpus
from sentiserve.errors import DataError


def test_the_sample_is_the_same_everywhere_and_varied() -> None:
    texts = sample_texts()
    assert texts == sample_texts()
    assert len(texts) == 600
    assert len(set(texts)) == 600
    lengths = sorted(len(t.split()) for t in texts)
    assert lengths[0] < 15  # one sentence
    assert lengths[-1] > 50  # six
    used = {s for s in SENTENCES if any(s in t for t in texts)}
    assert used == set(SENTENCES)


def test_an_unlabelled_corpus_is_marked_and_split() -> None:
    corpus = unlabelled_corpus(sample_texts(90), ("a", "b"), "sample", {"gate": "agreement"})
    assert corpus.labelled is False
    assert len(corpus.train) == 30
    assert len(corpus.test) == 60
    assert corpus.train.texts + corpus.test.texts == sample_texts(90)


def test_read_texts_from_lines_and_columns(tmp_path: Path) -> None:
    lines = tmp_path / "t.txt"
    lines.write_text("first text\n\n  second text  \n")
    assert read_texts(lines) == ("first text", "second text")
    table = tmp_path / "t.csv"
    table.write_text("id,text\n1,hello there\n2,general kenobi\n")
    assert read_texts(table) == ("hello there", "general kenobi")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    assert read_texts(jsonl) == ("one", "two")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "no texts"),
        ("nocol.csv", "body\nhello\n", "missing column(s) text"),
        ("bad.jsonl", '{"body": "x"}\n', "missing field(s) text"),
        ("blank.csv", 'text\n""\n', "text must be a non-empty string"),
        ("data.xml", "<a/>", "unsupported file type '.xml'"),
    ],
)
def test_read_texts_errors_name_the_file(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_texts(path)
    with pytest.raises(DataError, match="no such file"):
        read_texts(tmp_path / "missing.txt")
