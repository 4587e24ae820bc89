"""The PyTorch engine on the CPU (fp32): parity with the ONNX fp32 engine, independence from
batch-mates and padding, length buckets, and clear errors for GPU-only settings. GPU runs:
benchmarks/gpu_run.py (no GPU here: the CUDA paths skip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sentiserve.engine.onnxruntime import OnnxRuntimeEngine
from sentiserve.engine.predict import predict_probabilities
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.engine.torch import LENGTH_BUCKETS, TorchEngine, bucket
from sentiserve.errors import ConfigError, ModelLoadError
from tests.conftest import toy_texts


@pytest.fixture(scope="module")
def parts(tiny_build: Path) -> tuple[Path, Path, Tokenizer]:
    version = tiny_build / "model_repository" / "sentiment" / "1"
    tokenizer = Tokenizer(version / "tokenizer.json", max_length=64)
    return version, version / "model.onnx", tokenizer


def test_fp32_matches_the_onnx_fp32_engine(parts: tuple[Path, Path, Tokenizer]) -> None:
    version, onnx_file, tokenizer = parts
    texts = [t for t, _ in toy_texts(120, seed=4)]
    mine = predict_probabilities(TorchEngine(version, max_length=64), tokenizer, texts)
    theirs = predict_probabilities(OnnxRuntimeEngine(onnx_file), tokenizer, texts)
    assert np.abs(mine - theirs).max() <= 1e-4


def test_results_do_not_depend_on_batch_mates_or_padding(
    parts: tuple[Path, Path, Tokenizer],
) -> None:
    version, _, tokenizer = parts
    engine = TorchEngine(version, max_length=64)
    texts = [t for t, _ in toy_texts(40, seed=8)]
    alone = np.concatenate([predict_probabilities(engine, tokenizer, [t]) for t in texts])
    batch = tokenizer.pad(tokenizer.encode(texts))
    together = engine.infer(batch.input_ids, batch.attention_mask)
    shifted = together - together.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    assert np.abs(alone - probs).max() <= 1e-5


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 16), (16, 16), (17, 32), (200, 256), (300, 512), (600, 600)]
)
def test_length_buckets(value: int, expected: int) -> None:
    assert bucket(value, LENGTH_BUCKETS, 512) == expected


def test_buckets_stop_at_the_models_length() -> None:
    assert bucket(70, LENGTH_BUCKETS, 100) == 100


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dtype": "fp16"}, ConfigError, "CUDA only"),
        ({"dtype": "int4"}, ConfigError, "expected one of"),
        ({"cuda_graphs": True}, ConfigError, "CUDA device"),
    ],
)
def test_gpu_only_settings_are_refused_on_the_cpu(
    parts: tuple[Path, Path, Tokenizer], kwargs: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        TorchEngine(parts[0], **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(parts: tuple[Path, Path, Tokenizer]) -> None:
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        TorchEngine(parts[0], device="cuda", dtype="fp16")


def test_a_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load a classifier"):
        TorchEngine(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_fp16_with_cuda_graphs_agrees_with_fp32(parts: tuple[Path, Path, Tokenizer]) -> None:
    version, _, tokenizer = parts
    texts = [t for t, _ in toy_texts(64, seed=2)]
    base = predict_probabilities(TorchEngine(version, max_length=64), tokenizer, texts)
    fast = TorchEngine(version, device="cuda", dtype="fp16", max_length=64, cuda_graphs=True)
    got = predict_probabilities(fast, tokenizer, texts)
    assert (got.argmax(axis=1) == base.argmax(axis=1)).mean() > 0.98
    assert np.abs(got - base).max() < 0.02
