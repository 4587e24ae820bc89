"""int8 quantization with ONNX Runtime.

Static QDQ quantization is the form we serve: activation scales are fixed at calibration, so
a text's result never depends on what it is batched with. Dynamic quantization computes one
activation scale per tensor per call, over the whole padded batch, so a text's
probabilities move with its batch-mates; it is built only to be measured against.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sentiserve.engine.tokenizer import Tokenizer, segments
from sentiserve.errors import OptimizeError

logger = logging.getLogger(__name__)

CALIBRATION_TEXTS = 400
"""Single, unpadded training texts that set the activation ranges."""
QUANTIZED_OPS = ("MatMul", "Gemm")
"""Only the weight matmuls. Quantizing every op also quantizes the attention-mask arithmetic,
whose range is calibrated on unpadded texts only, and padding then changes results."""
KEEP_FP32 = (re.compile(r"layer\.[012]/output/dense/MatMul$"),)
"""Matmuls left in fp32: the feed-forward output projections of the first three encoder
layers. Their inputs (the GELU outputs) have the widest outlier ranges, so one uint8 scale
leaves little resolution for ordinary values. Measured on MiniLM (mean pooling), label
agreement with fp32 over 5,000 rt texts that calibration did not see: 98.0% with only
layer 0 kept, 98.7% with layers 0-1, 99.1% with layers 0-2, 99.2% with all six; the mean
|Δp| falls from 0.028 to 0.013 (0-2) and 0.010 (all). Keeping all six costs most of
int8's speed; 0-2 keeps most of it (benchmarks/RESULTS.md). Full 8-bit weights
(no reduced range), 1,000 calibration texts or percentile ranges changed agreement by
less than that, or lowered it."""


class _Calibration:
    """Feeds one unpadded text (or pair) at a time, so ranges never see padding."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        texts: Sequence[str],
        input_names: Sequence[str],
        pairs: Sequence[str] | None = None,
    ):
        seconds: Sequence[str | None] = pairs if pairs is not None else [None] * len(texts)
        self._batches: Iterator[dict[str, np.ndarray]] = (
            self._feed(tokenizer, text, second, input_names)
            for text, second in zip(texts, seconds, strict=True)
        )

    @staticmethod
    def _feed(
        tokenizer: Tokenizer, text: str, second: str | None, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if second is None:
            batch = tokenizer([text])
            types = batch.token_type_ids
        else:
            batch = tokenizer.pad(tokenizer.encode_pairs([text], [second]))
            assert tokenizer.sep_id is not None  # encode_pairs refuses tokenizers without
            types = segments(batch.input_ids, batch.attention_mask, tokenizer.sep_id)
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": types,
        }
        return {n: feeds[n] for n in names}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        raise NotImplementedError


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [i.name for i in model.graph.input]


def kept_in_fp32(path: Path, keep: Sequence[re.Pattern[str]] = KEEP_FP32) -> list[str]:
    """Names of the nodes in ``path`` that static quantization leaves in fp32."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTIZED_OPS and any(p.search(n.name) for p in keep)
    ]


def static_int8(
    fused: Path,
    out: Path,
    tokenizer: Tokenizer,
    calibration_texts: Sequence[str],
    keep: Sequence[re.Pattern[str]] = KEEP_FP32,
    calibration_pairs: Sequence[str] | None = None,
) -> None:
    """Static QDQ int8: per-channel int8 weights, uint8 activations (reduced range),
    MinMax ranges from single unpadded texts, MatMul and Gemm only, except the matmuls
    ``keep`` names (``KEEP_FP32``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_texts:
        raise OptimizeError("static quantization needs calibration texts")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Without pre-processing, quantize_static fails on the pooler bias scale.
            quant_pre_process(str(fused), str(prepared), skip_optimization=False)
            quantize_static(
                str(prepared),
                str(out),
                _Calibration(
                    tokenizer, calibration_texts, _graph_inputs(prepared), calibration_pairs
                ),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=kept_in_fp32(prepared, keep),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        except Exception as exc:  # onnxruntime.quantization raises assorted types
            out.unlink(missing_ok=True)
            raise OptimizeError(f"static int8 quantization of {fused} failed: {exc}") from exc


def dynamic_int8(fused: Path, out: Path) -> None:
    """Dynamic int8 (for comparison only: not batch-invariant)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(
            str(fused),
            str(out),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise OptimizeError(f"dynamic int8 quantization of {fused} failed: {exc}") from exc
