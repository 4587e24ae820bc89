"""ONNX Runtime's transformer fusion (fp32) and its fp16 form for GPUs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sentiserve.errors import OptimizeError

logger = logging.getLogger(__name__)

EXPECTED_FUSIONS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization")


def model_shape(model_dir: Path) -> tuple[int, int, str]:
    """Attention heads, hidden size and model type from a saved model's config.json
    (DistilBERT names the first two ``n_heads`` and ``dim``)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        heads = config.get("num_attention_heads", config.get("n_heads"))
        hidden = config.get("hidden_size", config.get("dim"))
        return int(heads), int(hidden), config["model_type"]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise OptimizeError(f"cannot read heads and hidden size from {model_dir}: {exc}") from exc


def _optimizer_type(model_type: str) -> str:
    # ORT's fusion passes know BERT-like encoders under these names.
    return model_type if model_type in {"bert", "bart", "gpt2", "t5"} else "bert"


def fuse(
    raw: Path,
    out: Path,
    *,
    num_heads: int,
    hidden_size: int,
    model_type: str = "bert",
    float16: bool = False,
) -> dict[str, int]:
    """Fuse ``raw`` into ``out`` and return the fused-operator counts.

    With ``float16`` the fused graph is converted to fp16 weights and compute, keeping fp32
    inputs and outputs (for GPUs; ONNX Runtime's CPU kernels also run it, slowly).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        model = optimize_model(
            str(raw),
            model_type=_optimizer_type(model_type),
            num_heads=num_heads,
            hidden_size=hidden_size,
        )
        stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
        if float16:
            model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(out))
    except Exception as exc:  # the optimizer raises assorted types
        out.unlink(missing_ok=True)
        raise OptimizeError(f"fusing {raw} failed: {exc}") from exc
    missing = [op for op in EXPECTED_FUSIONS if not stats.get(op)]
    if missing:
        logger.warning("fusion left %s unfused (got %s)", ", ".join(missing), json.dumps(stats))
    return stats
