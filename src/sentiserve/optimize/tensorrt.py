"""A TensorRT engine (``model.plan``) built from the fp32 ONNX graph, on NVIDIA GPUs only.

A plan is specific to the GPU model and TensorRT version that built it; Triton's
``tensorrt_plan`` platform serves it. Built only when ``tensorrt`` is importable.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from sentiserve.errors import OptimizeError

logger = logging.getLogger(__name__)

OPT_LENGTH = 64
"""Sequence length TensorRT tunes kernels for (rt reviews are ~25-50 tokens)."""


def available() -> tuple[bool, str]:
    """Whether a TensorRT engine can be built here, and if not, why."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt is not installed (GPU machines: pip install 'sentiserve[gpu]')"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device"
    except ImportError:
        return False, "torch is not installed"
    return True, ""


def build_plan(
    onnx_path: Path, out: Path, *, max_batch: int, max_length: int, fp16: bool = True
) -> None:
    """Build a TensorRT plan with a dynamic-shape profile up to ``max_batch`` x ``max_length``."""
    import onnx
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise OptimizeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    names = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    for name in names:
        profile.set_shape(name, (1, 1), (8, min(OPT_LENGTH, max_length)), (max_batch, max_length))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise OptimizeError(f"TensorRT could not build an engine from {onnx_path}")
    out.write_bytes(bytes(plan))
