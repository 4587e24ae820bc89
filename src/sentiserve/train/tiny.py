"""Small randomly initialised BERT classifiers with a word-level vocabulary, built in
seconds and without a hub: for tests, and for benchmarks that only need a model's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
LETTERS = tuple(chr(c) for c in range(ord("a"), ord("z") + 1))


def word_tokenizer(words: Sequence[str], max_length: int = 512) -> Any:
    """A lower-casing WordPiece tokenizer whose vocabulary is the special tokens, ``words``,
    and single letters (so any ASCII word still tokenizes), with BERT's single and pair
    templates."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokens = [*SPECIALS, *dict.fromkeys(words), *LETTERS, *(f"##{c}" for c in LETTERS)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    rust = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    rust.normalizer = normalizers.BertNormalizer(lowercase=True)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rust.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    rust.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=rust,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def tiny_bert(
    folder: Path,
    words: Sequence[str],
    labels: Mapping[int, str],
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised BERT classifier and its word tokenizer in ``folder``
    (position embeddings for exactly ``max_length`` tokens)."""
    return tiny_classifier(
        folder,
        "bert",
        words,
        labels,
        hidden=hidden,
        layers=layers,
        heads=heads,
        max_length=max_length,
        seed=seed,
        max_position_embeddings=max_length,
    )


NO_TOKEN_TYPES = {"distilbert", "roberta", "xlm-roberta", "mpnet"}
"""Architectures whose tokenizers return no ``token_type_ids``."""


def _shape(model_type: str, hidden: int, layers: int, heads: int, positions: int) -> dict[str, Any]:
    if model_type == "distilbert":
        return {
            "dim": hidden,
            "n_layers": layers,
            "n_heads": heads,
            "hidden_dim": 2 * hidden,
            "max_position_embeddings": positions,
        }
    shape: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 2 * hidden,
        # RoBERTa-style position ids start after the padding id: room for that offset.
        "max_position_embeddings": positions + 2,
    }
    if model_type == "electra":
        shape["embedding_size"] = hidden
    if model_type == "deberta-v2":  # the v3 layout: relative positions, no absolute ones
        shape.update(
            relative_attention=True,
            position_buckets=32,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
        )
    return shape


def tiny_classifier(
    folder: Path,
    model_type: str,
    words: Sequence[str],
    labels: Mapping[int, str],
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 128,
    seed: int = 0,
    problem_type: str | None = None,
    **config_overrides: Any,
) -> Path:
    """Save a randomly initialised sequence classifier of ``model_type`` (``bert``,
    ``distilbert``, ``roberta``, ``xlm-roberta``, ``electra``, ``deberta-v2``, ``mpnet``)
    with the word tokenizer, as a Hugging Face folder: what a user's checkpoint looks like.
    ``config_overrides`` go to the model config (``initializer_range=0.5``: outputs that
    vary more from text to text)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = word_tokenizer(words, max_length)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        pad_token_id=0,
        id2label=dict(labels),
        label2id={name: i for i, name in labels.items()},
        **({"problem_type": problem_type} if problem_type else {}),
        **{**_shape(model_type, hidden, layers, heads, max_length), **config_overrides},
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)  # type: ignore[no-untyped-call]
    if model_type in NO_TOKEN_TYPES:
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
