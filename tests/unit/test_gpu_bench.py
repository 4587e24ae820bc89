"""benchmarks/gpu.py: measures nothing without a GPU; on a GPU it writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS-gpu.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert "no CUDA GPU" in done.stderr
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_on_a_gpu_every_engine_is_measured_or_explained(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS-gpu.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--runs", "3", "--shapes", "1x128,8x128"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for engine in ("pytorch eager fp32", "pytorch eager fp16"):
        assert f"| {engine} | 8 | 128 |" in text
    for engine in ("onnxruntime CUDA", "onnxruntime TensorRT fp16"):
        assert f"| {engine} |" in text or f"Not measured: {engine}:" in text
