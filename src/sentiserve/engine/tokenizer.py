"""The serving tokenizer: Hugging Face's fast (Rust) tokenizer plus our long-text policy.

The same code tokenizes for ``sentiserve evaluate``, for the optimisation checks and for
the server, so the served form of a model is exactly what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.errors import ModelLoadError, SentiserveError

HEAD_TOKENS = 128
"""Tokens ``head_tail`` keeps from the start of a long text (Sun et al., 2019)."""


class Truncation(StrEnum):
    """What to do with a text longer than the model's ``max_length`` tokens."""

    TRUNCATE = "truncate"
    """Keep the head (cut on the right)."""
    TRUNCATE_LEFT = "truncate_left"
    """Keep the tail (cut on the left)."""
    HEAD_TAIL = "head_tail"
    """Keep the first 128 tokens and the last ``max_length - 130``."""
    REJECT = "reject"
    """Refuse the text, naming its token count."""


class TextTooLongError(SentiserveError):
    """A text is longer than ``max_length`` tokens and the policy is ``reject``."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


@dataclass(frozen=True)
class Encoded:
    """Token ids per text, and how many tokens each text had before it was cut (special
    tokens included): a text was truncated when it has fewer ids than that."""

    ids: list[list[int]]
    lengths: list[int]

    @property
    def truncated(self) -> list[bool]:
        return [len(ids) < n for ids, n in zip(self.ids, self.lengths, strict=True)]


def text_problem(text: object) -> str | None:
    """Why ``text`` cannot be classified (``"is empty"``, ``"must be a string, got int"``),
    or None. Whitespace and control characters do not count: the tokenizer drops them, so a
    text of only those is empty. The server and batch scoring refuse the same texts."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if not text.strip():
        return "is empty"
    if not text.isprintable() and not any(c.isprintable() and not c.isspace() for c in text):
        return "is empty"
    return None


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for a batch of texts (int64, shape ``[batch, longest]``)."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]

    @property
    def token_type_ids(self) -> npt.NDArray[np.int64]:
        return np.zeros_like(self.input_ids)


class Tokenizer:
    """Tokenizes texts into unpadded id sequences and pads groups of them into batches.

    Args:
        path: A ``tokenizer.json`` file written by a Hugging Face fast tokenizer.
        max_length: Most tokens per text, special tokens included.
        truncation: The long-text policy.
        pad_id: Id of the padding token (the model config's ``pad_token_id``).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_length: int,
        truncation: Truncation = Truncation.TRUNCATE,
        pad_id: int = 0,
    ) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        try:
            self._tok = RustTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise ModelLoadError(f"cannot load tokenizer {path}: {exc}") from exc
        self._tok.no_truncation()
        self._tok.no_padding()
        specials = self._tok.encode("", add_special_tokens=True).ids
        self._prefix = list(specials[:1])
        self._suffix = list(specials[1:])
        budget = max_length - len(self._prefix) - len(self._suffix)
        if budget < 2:
            raise ModelLoadError(f"max_length {max_length} leaves no room for text")
        self.max_length = max_length
        self.truncation = Truncation(truncation)
        self.pad_id = pad_id
        self._path = path
        self._pair_tokenizers: dict[tuple[str, int], Any] = {}
        self.sep_id, self.pair_problem = self._pair_template()
        self._budget = budget

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def content_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation, without special tokens."""
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], *, parallel: bool = True) -> list[list[int]]:
        """Token ids per text, special tokens added and the long-text policy applied (see
        :meth:`encode_counted`)."""
        return self.encode_counted(texts, parallel=parallel).ids

    def encode_counted(
        self,
        texts: Sequence[str],
        *,
        parallel: bool = True,
        truncation: Truncation | None = None,
        max_tokens: int | None = None,
    ) -> Encoded:
        """Token ids per text, special tokens added and a long-text policy applied, with each
        text's length before it was cut.

        Args:
            parallel: Let the Rust tokenizer spread the texts over its own thread pool.
                Off on a server's event loop: handing one short text to a pool thread and
                waiting for it costs far more than tokenizing it (about 35 µs) when the
                engine keeps every core busy.
            truncation: This request's policy (None: the model's).
            max_tokens: Most tokens per text for this request, special tokens included
                (None or more than ``max_length``: ``max_length``).

        Raises:
            TextTooLongError: A text is too long and the policy is ``reject``.
            InvalidInputError: ``max_tokens`` leaves no room for text.
        """
        policy = self.truncation if truncation is None else truncation
        budget = self._budget_for(max_tokens)
        if parallel:
            encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        else:
            encoded = [self._tok.encode(t, add_special_tokens=False) for t in texts]
        extra = len(self._prefix) + len(self._suffix)
        out: list[list[int]] = []
        lengths: list[int] = []
        for index, enc in enumerate(encoded):
            ids = list(enc.ids)
            lengths.append(len(ids) + extra)
            if len(ids) > budget:
                ids = self._shorten(ids, index, policy, budget)
            out.append(self._prefix + ids + self._suffix)
        return Encoded(out, lengths)

    def _budget_for(self, max_tokens: int | None) -> int:
        """Tokens of text (special tokens excluded) a request may keep."""
        if max_tokens is None or max_tokens >= self.max_length:
            return self._budget
        budget = max_tokens - len(self._prefix) - len(self._suffix)
        if budget < 1:
            from sentiserve.errors import InvalidInputError

            raise InvalidInputError(
                f"a limit of {max_tokens} tokens leaves no room for text (this model adds "
                f"{len(self._prefix) + len(self._suffix)} special tokens)"
            )
        return budget

    def _shorten(self, ids: list[int], index: int, policy: Truncation, budget: int) -> list[int]:
        extra = len(self._prefix) + len(self._suffix)
        if policy is Truncation.REJECT:
            total = len(ids) + extra
            raise TextTooLongError(
                f"text {index} has {total} tokens; this model takes at most {budget + extra} "
                "(truncation: reject)",
                total,
                budget + extra,
            )
        if policy is Truncation.HEAD_TAIL:
            head = min(HEAD_TOKENS, budget // 2)
            tail = budget - head
            return ids[:head] + ids[len(ids) - tail :]
        if policy is Truncation.TRUNCATE_LEFT:
            return ids[len(ids) - budget :]
        return ids[:budget]

    def pad(self, sequences: Sequence[Sequence[int]], multiple_of: int = 1) -> Batch:
        """Pad to the longest sequence (rounded up to ``multiple_of``), never to max_length."""
        if not sequences:
            raise ValueError("cannot pad an empty batch")
        longest = max(len(s) for s in sequences)
        if multiple_of > 1:
            longest = min(-(-longest // multiple_of) * multiple_of, self.max_length)
        ids = np.full((len(sequences), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return Batch(ids, mask)

    def _pair_template(self) -> tuple[int | None, str | None]:
        """The separator whose position splits a pair's segments, and why pairs cannot be
        encoded (None when they can).

        Engines rebuild ``token_type_ids`` from the ids (0 up to and including the first
        separator, 1 after it), so the batcher only carries ids. That holds for BERT's pair
        template and for templates without token types (RoBERTa's); a tokenizer whose pair
        template types tokens otherwise cannot take pairs."""
        try:
            pair = self._tok.encode("a", "b", add_special_tokens=True)
            single = self._tok.encode("a", add_special_tokens=True)
        except Exception as exc:  # the Rust side raises a bare Exception
            return None, f"its tokenizer cannot encode a pair ({exc})"
        if len(pair.ids) <= len(single.ids):
            return None, "its tokenizer has no template for a pair of texts"
        sep = single.ids[-1]
        ids = np.asarray([pair.ids])
        derived = segments(ids, np.ones_like(ids), sep)[0].tolist()
        if list(pair.type_ids) != derived and any(pair.type_ids):
            return (
                None,
                "its tokenizer's pair template types tokens in a way engines cannot rebuild",
            )
        return sep, None

    def encode_pairs(
        self, texts: Sequence[str], pairs: Sequence[str], *, parallel: bool = True
    ) -> list[list[int]]:
        """Token ids per (text, text pair) (see :meth:`encode_pairs_counted`)."""
        return self.encode_pairs_counted(texts, pairs, parallel=parallel).ids

    def encode_pairs_counted(
        self,
        texts: Sequence[str],
        pairs: Sequence[str],
        *,
        parallel: bool = True,
        truncation: Truncation | None = None,
        max_tokens: int | None = None,
    ) -> Encoded:
        """Token ids per (text, text pair), with the model's own pair template; a pair
        longer than the limit loses tokens from its longer side first (from the left of it
        under ``truncate_left``), or is refused under ``reject``.

        Raises:
            InvalidInputError: The model's tokenizer has no usable pair template.
            TextTooLongError: A pair is too long and the policy is ``reject``.
        """
        from sentiserve.errors import InvalidInputError

        if self.pair_problem is not None:
            raise InvalidInputError(f"this model takes single texts: {self.pair_problem}")
        if len(texts) != len(pairs):
            raise InvalidInputError(f"{len(texts)} texts but {len(pairs)} text pairs")
        policy = self.truncation if truncation is None else truncation
        limit = self._budget_for(max_tokens) + len(self._prefix) + len(self._suffix)
        extra = self._tok.num_special_tokens_to_add(True)
        full = zip(self.content_lengths(texts), self.content_lengths(pairs), strict=True)
        lengths = [a + b + extra for a, b in full]
        if policy is Truncation.REJECT:
            for index, total in enumerate(lengths):
                if total > limit:
                    raise TextTooLongError(
                        f"pair {index} has {total} tokens; this model takes at most {limit} "
                        "(truncation: reject)",
                        total,
                        limit,
                    )
        side = "left" if policy is Truncation.TRUNCATE_LEFT else "right"
        tokenizer = self._pair_tokenizer(side, limit)
        items = list(zip(texts, pairs, strict=True))
        if parallel:
            encoded = tokenizer.encode_batch(items, add_special_tokens=True)
        else:
            encoded = [tokenizer.encode(a, b, add_special_tokens=True) for a, b in items]
        return Encoded([list(e.ids) for e in encoded], lengths)

    def _pair_tokenizer(self, side: str, limit: int) -> Any:
        """A tokenizer that cuts pairs to ``limit`` tokens from ``side`` (made once each)."""
        key = (side, limit)
        tokenizer = self._pair_tokenizers.get(key)
        if tokenizer is None:
            from tokenizers import Tokenizer as RustTokenizer

            if len(self._pair_tokenizers) >= 16:  # request limits vary: keep a few
                self._pair_tokenizers.pop(next(iter(self._pair_tokenizers)))
            tokenizer = RustTokenizer.from_file(str(self._path))
            tokenizer.no_padding()
            tokenizer.enable_truncation(limit, strategy="longest_first", direction=side)
            self._pair_tokenizers[key] = tokenizer
        return tokenizer

    def __call__(self, texts: Sequence[str]) -> Batch:
        return self.pad(self.encode(texts))


def segments(
    input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64], sep_id: int
) -> npt.NDArray[np.int64]:
    """``token_type_ids`` rebuilt from the ids: 0 up to and including the first ``sep_id``,
    1 after it, 0 on padding. A single text's real tokens are all 0, as before."""
    is_sep = (input_ids == sep_id).astype(np.int64)
    before = np.cumsum(is_sep, axis=1) - is_sep
    types: npt.NDArray[np.int64] = ((before > 0) & (attention_mask > 0)).astype(np.int64)
    return types
