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


def test_a_request_chooses_its_own_policy_and_limit(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=32, truncation=Truncation.HEAD_TAIL)
    good, bad = tok.encode(["good"])[0][1], tok.encode(["bad"])[0][1]
    text = long_text(100)
    left = tok.encode_counted([text, "good film"], truncation=Truncation.TRUNCATE_LEFT)
    assert left.lengths == [102, 4]
    assert left.truncated == [True, False]
    assert len(left.ids[0]) == 32
    assert left.ids[0][-11:-1] == [bad] * 10
    assert good not in left.ids[0]
    right = tok.encode_counted([text], truncation=Truncation.TRUNCATE)
    assert right.ids[0][1:11] == [good] * 10
    assert bad not in right.ids[0]
    # The model's own policy when the request names none.
    assert tok.encode_counted([text]).ids == tok.encode([text])
    assert tok.encode_counted([text]).ids[0][-11:-1] == [bad] * 10
    # A smaller limit for this request (vLLM's truncate_prompt_tokens), never a larger one.
    assert len(tok.encode_counted([text], max_tokens=12).ids[0]) == 12
    assert len(tok.encode_counted([text], max_tokens=10_000).ids[0]) == 32
    with pytest.raises(TextTooLongError) as caught:
        tok.encode_counted(["fine", text], truncation=Truncation.REJECT)
    assert (caught.value.tokens, caught.value.limit) == (102, 32)
    assert "text 1 has 102 tokens" in caught.value.message


def test_a_limit_that_leaves_no_room_is_refused(tokenizer_json: Path) -> None:
    from sentiserve.errors import InvalidInputError

    tok = Tokenizer(tokenizer_json, max_length=32)
    with pytest.raises(InvalidInputError, match="leaves no room"):
        tok.encode_counted(["good film"], max_tokens=2)


def test_pairs_are_cut_from_the_side_asked_for(tokenizer_json: Path) -> None:
    tok = Tokenizer(tokenizer_json, max_length=32)
    bad = tok.encode(["bad"])[0][1]
    good = tok.encode(["good"])[0][1]
    second = " ".join(["bad"] * 40)
    right = tok.encode_pairs_counted(["good " * 5], [second])
    left = tok.encode_pairs_counted(
        ["good " * 5], [" ".join(["good"] * 30 + ["bad"] * 10)], truncation=Truncation.TRUNCATE_LEFT
    )
    assert right.lengths == [48]
    assert right.truncated == [True]
    assert len(right.ids[0]) == 32
    assert right.ids[0].count(bad) == 32 - 3 - 5
    # Cut on the left, the longer text loses its start: its ten trailing "bad" stay.
    assert left.ids[0][-11:-1] == [bad] * 10
    assert left.truncated == [True]
    assert left.ids[0][1:6] == [good] * 5
    with pytest.raises(TextTooLongError, match="pair 0 has 48 tokens; .* at most 32"):
        tok.encode_pairs_counted(["good " * 5], [second], truncation=Truncation.REJECT)
