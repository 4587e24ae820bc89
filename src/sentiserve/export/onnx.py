"""ONNX export of a fine-tuned classifier, and the parity check against PyTorch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiserve.errors import ExportError, ModelLoadError

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4
"""Largest |logit difference| between PyTorch and the exported graph that passes."""
PARITY_BATCH_SIZES = (1, 8, 32)
PARITY_MAX_LENGTH_BATCH = 8
"""The largest batch also checked padded to ``max_length``: the batch axis is checked up to
32 at the longest text's padding, the length axis up to ``max_length`` at batches up to 8
(batches of 32 at 256 tokens took 11 of the check's 16 s on MiniLM with one thread, and
added no shape that the others miss)."""

SAMPLE_TEXTS = (
    "A gorgeous, heartfelt film with performances that stay with you.",
    "Dull, overlong and utterly forgettable.",
    "It's fine.",
    "The plot makes no sense, yet somehow I loved every minute of it, from the clumsy first "
    "act to the absurd, glorious finale that nobody asked for.",
    "Not good.",
    "An unexpectedly moving meditation on grief, anchored by a career-best turn.",
)


@dataclass(frozen=True)
class ExportResult:
    """The exported graph and how closely it matches PyTorch."""

    path: Path
    input_names: tuple[str, ...]
    max_abs_diff: float
    checked: int


def load_classifier(model_dir: Path) -> tuple[Any, Any]:
    """Load a fine-tuned model (eager attention, eval mode) and its tokenizer."""
    from transformers import AutoTokenizer

    from sentiserve.engine.models import load_classifier as load_model

    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_model(model_dir, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load a fine-tuned classifier from {model_dir}: {exc}"
        ) from exc
    model.eval()
    return model, tokenizer


def _logits_module(model: Any, input_names: Sequence[str]) -> Any:
    import torch

    class Logits(torch.nn.Module):
        """Positional inputs in ``input_names`` order; returns only the logits tensor."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            out = self.model(**dict(zip(input_names, tensors, strict=True)), return_dict=True)
            logits: torch.Tensor = out.logits
            return logits

    return Logits()


def input_names_for(tokenizer: Any) -> tuple[str, ...]:
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        names.append("token_type_ids")
    return tuple(names)


def export(
    model_dir: Path,
    out_path: Path,
    *,
    texts: Sequence[str] = SAMPLE_TEXTS,
    max_length: int = 256,
    opset: int = OPSET,
) -> ExportResult:
    """Export to ONNX with dynamic batch and sequence axes, then check parity.

    Raises:
        ExportError: The export failed or a logit differs from PyTorch by more than 1e-4.
    """
    import torch

    if opset < OPSET:
        raise ExportError(f"opset {opset} is too old; use {OPSET} or newer")
    model, tokenizer = load_classifier(model_dir)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ExportError(
            f"max_length {max_length} exceeds the model's {positions} position embeddings"
        )
    names = input_names_for(tokenizer)
    wrapper = _logits_module(model, names)
    # The legacy exporter restores training mode on the module it is given: eval() it.
    wrapper.eval()
    sample = tokenizer(
        ["a short sample", "and another, slightly longer sample"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_suffix(".partial.onnx")
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                args,
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        partial.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {model_dir} failed: {exc}") from exc
    try:
        diff, checked = parity(wrapper, tokenizer, names, partial, texts, max_length)
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    if diff > PARITY_TOLERANCE:
        partial.unlink(missing_ok=True)
        raise ExportError(
            f"exported graph disagrees with PyTorch: max |Δlogit| = {diff:.3g} "
            f"> {PARITY_TOLERANCE:g} over {checked} texts"
        )
    partial.replace(out_path)
    logger.info("exported %s (max |dlogit| %.2e over %d texts)", out_path, diff, checked)
    return ExportResult(out_path, names, diff, checked)


def parity(
    wrapper: Any,
    tokenizer: Any,
    names: Sequence[str],
    onnx_path: Path,
    texts: Sequence[str],
    max_length: int,
) -> tuple[float, int]:
    """Largest |logit difference| between PyTorch and ONNX Runtime, at several batch sizes
    and at two paddings (to the longest text, and to ``max_length`` up to
    ``PARITY_MAX_LENGTH_BATCH``)."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    # The exporter drops an input the model ignores (token_type_ids where there are no
    # token types, as in DeBERTa-v3): feed the graph what it takes, PyTorch all of them.
    graph_inputs = {i.name for i in session.get_inputs()}
    texts = list(texts)
    worst = 0.0
    checked = 0
    for batch_size in PARITY_BATCH_SIZES:
        paddings = ("longest", "max_length")[: 2 if batch_size <= PARITY_MAX_LENGTH_BATCH else 1]
        for padding in paddings:
            for start in range(0, min(len(texts), 2 * batch_size), batch_size):
                chunk = texts[start : start + batch_size]
                enc = tokenizer(
                    chunk,
                    padding=padding,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="np",
                )
                feeds = {n: enc[n].astype(np.int64) for n in names}
                (got,) = session.run(
                    ["logits"], {n: v for n, v in feeds.items() if n in graph_inputs}
                )
                with torch.no_grad():
                    want = wrapper(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
                worst = max(worst, float(np.abs(got - want).max()))
                checked += len(chunk)
    return worst, checked
