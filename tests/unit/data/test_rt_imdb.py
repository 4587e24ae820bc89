"""The built-in rt source's parsing and the hub-only imdb source (offline). Downloading the
rt corpus is in tests/integration/test_rt_data.py."""

from __future__ import annotations

import bz2

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


def test_imdb_offline_names_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match=r"--data rt .* aclImdb"):
        imdb.load("imdb-sentiserve-test-nonexistent")
