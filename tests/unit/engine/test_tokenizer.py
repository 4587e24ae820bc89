"""The serving tokenizer: long-text policies and padding to the longest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sentiserve.engine.tokenizer import TextTooLongError, Tokenizer, Truncation


@pytest.fixture
def tokenizer_json(tiny_bert: Path) -> Path:
    return tiny_bert / "tokenizer.json"


def long_text(n: int) -> str:
    return " ".join(["good"] * 10 + ["film"] * (n - 20) + ["bad"] * 10)


def test_short_text_gets_special_tokens(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=64)
    (ids,) = tok.encode(["good film"])
    assert len(ids) == 4
    assert ids[0] != ids[-1]  # [CLS] ... [SEP]


def test_truncate_keeps_the_head(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=32, truncation=Truncation.TRUNCATE)
    (ids,) = tok.encode([long_text(100)])
    good, bad = tok.encode(["good"])[0][1], tok.encode(["bad"])[0][1]
    assert len(ids) == 32
    assert ids[1:11] == [good] * 10
    assert bad not in ids


def test_head_tail_keeps_both_ends(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=300, truncation=Truncation.HEAD_TAIL)
    (ids,) = tok.encode([long_text(1000)])
    bad = tok.encode(["bad"])[0][1]
    assert len(ids) == 300
    # 128 head tokens after [CLS], then the last max_length - 130 tokens of the text.
    assert ids[-11:-1] == [bad] * 10
    assert ids[129:] == tok.encode([long_text(1000)])[0][129:]


def test_reject_names_the_token_count(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=32, truncation=Truncation.REJECT)
    assert len(tok.encode(["good film"])[0]) == 4
    with pytest.raises(TextTooLongError, match=r"text 1 has 102 tokens; .* at most 32"):
        tok.encode(["fine", long_text(100)])


def test_pad_to_longest_not_max_length(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=128)
    batch = tok(["good", "good film was so good"])
    assert batch.input_ids.shape == (2, 7)
    assert batch.input_ids.dtype == np.int64
    assert batch.attention_mask.tolist()[0] == [1, 1, 1, 0, 0, 0, 0]
    assert batch.input_ids[0, 3:].tolist() == [0, 0, 0, 0]
    assert tok.pad(tok.encode(["good"]), multiple_of=8).input_ids.shape == (1, 8)
    with pytest.raises(ValueError, match="empty batch"):
        tok.pad([])


def test_unreadable_tokenizer_file(tmp_path: Path) -> None:
    from sentiserve.errors import ModelLoadError

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load tokenizer"):
        Tokenizer(bad, max_length=32)
