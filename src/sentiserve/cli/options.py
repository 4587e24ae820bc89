"""Options that several commands share: one flag and one help text each, with each
command's own default."""

from __future__ import annotations

from typing import Any

import typer

HELP = {
    "base_model": "'minilm' (bundled MiniLM-L6-H384), a hub name (bert-base-uncased) or a "
    "local folder.",
    "data": "rt, imdb, a data file or an aclImdb folder.",
    "epochs": "Passes over the training split.",
    "batch_size": "Examples per step.",
    "learning_rate": "Peak learning rate.",
    "max_length": "Longest text in tokens.",
    "pooling": "Classifier head: cls (Hugging Face's pooler) or mean.",
    "layer_decay": "Layer-wise learning-rate decay (1: off).",
    "max_steps": "Stop after this many steps (overrides --epochs).",
}
"""Help of the fine-tuning options that ``train`` and ``build`` share (with their own
defaults)."""
FLAGS = {"base_model": "--base-model"}


def option(field: str, default: Any) -> Any:
    """A fine-tuning option shared by ``train`` and ``build``: one flag and one help text."""
    flags = (FLAGS[field],) if field in FLAGS else ()
    return typer.Option(default, *flags, help=HELP[field])


def variants_option() -> Any:
    """``--variants`` of ``optimize`` and ``build``: which engine variants to build and check."""
    from sentiserve.optimize.variants import OptimizeSettings

    return typer.Option(
        ",".join(OptimizeSettings.variants),
        help="Engine variants to build and check, comma-separated (fp32, the reference, is "
        "always built; fp16 and tensorrt are measured only on a GPU).",
    )


def variant_names(text: str) -> tuple[str, ...]:
    """``--variants``' value as names."""
    return tuple(v.strip() for v in text.split(",") if v.strip())
