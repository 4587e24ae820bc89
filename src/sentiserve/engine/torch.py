"""PyTorch engine: the fine-tuned model itself, on CUDA in fp16/bf16 with SDPA attention, or
on the CPU in fp32 (which is how it is tested here).

It is the GPU path that needs neither TensorRT nor onnxruntime-gpu: what a user with a GPU
and PyTorch runs. Batches are padded up to a small set of length buckets, so CUDA sees few
distinct shapes, and with ``cuda_graphs`` each (batch size, length) bucket is captured once
as a CUDA graph and replayed (launch overhead dominates small batches of a small model).

Results do not depend on padding: padded positions are masked in attention and the
classifier reads the first token, and the fp32 CPU engine agrees with the fp32 ONNX engine
within 1e-4 (tested). fp16 and bf16 kernels pick their algorithms per shape, so on a GPU
batch invariance is measured, not assumed, and written in the manifest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.engine.tokenizer import segments
from sentiserve.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
"""Padded lengths a batch is rounded up to (then max_length)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
"""With CUDA graphs: batch sizes a batch is rounded up to (dummy rows are sliced away)."""
DTYPES = ("fp32", "fp16", "bf16")


def bucket(value: int, buckets: Sequence[int], cap: int) -> int:
    """The smallest bucket >= ``value`` (``cap`` when none is, or ``value`` beyond ``cap``)."""
    for size in buckets:
        if size >= value:
            return min(size, max(cap, value))
    return max(cap, value)


NVIDIA_DRIVER = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"))


def cuda_available() -> bool:
    """Whether PyTorch can use a CUDA GPU here. Without an NVIDIA driver on the machine the
    answer is no without importing torch (which costs a CPU server 1-2 s and 200 MB)."""
    if not any(path.exists() for path in NVIDIA_DRIVER):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchEngine:
    """Runs a Hugging Face sequence classifier with PyTorch.

    Args:
        model_dir: A folder with ``config.json`` and ``model.safetensors``.
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        dtype: ``fp32``, ``fp16`` or ``bf16`` (fp16/bf16 on CUDA only).
        max_length: The model's longest input, the last length bucket.
        threads: CPU threads (torch.set_num_threads) when on the CPU.
        cuda_graphs: Capture and replay a CUDA graph per (batch, length) bucket.
        sep_id: The separator of the tokenizer's pair template: ``token_type_ids`` are
            rebuilt from the ids (``tokenizer.segments``); None: zeros.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        dtype: str = "fp32",
        max_length: int = 512,
        threads: int | None = None,
        cuda_graphs: bool = False,
        sep_id: int | None = None,
    ) -> None:
        import torch

        from sentiserve.engine.models import load_classifier

        if dtype not in DTYPES:
            raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        on_cuda = device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise ModelLoadError("device cuda asked for, but PyTorch sees no CUDA GPU")
        if dtype != "fp32" and not on_cuda:
            raise ConfigError(f"{dtype} runs on CUDA only; use fp32 on the CPU")
        if cuda_graphs and not on_cuda:
            raise ConfigError("CUDA graphs need a CUDA device")
        if threads and not on_cuda:
            torch.set_num_threads(threads)
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        try:
            model = load_classifier(model_dir, attn_implementation="sdpa", dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load a classifier from {model_dir}: {exc}") from exc
        self._torch = torch
        self._model = model.to(device).eval()
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.cuda_graphs = cuda_graphs
        uses_types = int(getattr(model.config, "type_vocab_size", 0) or 0) > 1
        self.sep_id = sep_id if uses_types else None
        self.name = f"torch:{dtype}:{device}"
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any, Any]] = {}
        self._lock = threading.Lock()

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        torch = self._torch
        rows, length = input_ids.shape
        padded = bucket(length, LENGTH_BUCKETS, self.max_length)
        ids = np.zeros((rows, padded), dtype=np.int64)
        mask = np.zeros((rows, padded), dtype=np.int64)
        ids[:, :length] = input_ids
        mask[:, :length] = attention_mask
        types = None if self.sep_id is None else segments(ids, mask, self.sep_id)
        with torch.inference_mode():
            if self.cuda_graphs and (types is None or not types.any()):
                logits = self._replay(ids, mask)
            else:  # pairs with token types run outside the graphs, which capture ids and mask
                ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
                mask_t = torch.from_numpy(mask).to(self.device, non_blocking=True)
                extra = {}
                if types is not None:
                    extra["token_type_ids"] = torch.from_numpy(types).to(self.device)
                logits = self._model(input_ids=ids_t, attention_mask=mask_t, **extra).logits
            return np.asarray(logits.float().cpu().numpy()[:rows], dtype=np.float32)

    def _replay(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Any:
        """Run through the CUDA graph of this (batch, length) bucket, capturing it once."""
        torch = self._torch
        rows, length = ids.shape
        batch = bucket(rows, BATCH_BUCKETS, BATCH_BUCKETS[-1])
        key = (batch, length)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                static_ids = torch.zeros((batch, length), dtype=torch.int64, device=self.device)
                static_mask = torch.ones((batch, length), dtype=torch.int64, device=self.device)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm up outside the graph, as CUDA requires
                    for _ in range(2):
                        self._model(input_ids=static_ids, attention_mask=static_mask)
                torch.cuda.current_stream().wait_stream(stream)
                captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(captured):
                    out = self._model(input_ids=static_ids, attention_mask=static_mask).logits
                graph = (captured, static_ids, static_mask, out)
                self._graphs[key] = graph
        captured, static_ids, static_mask, out = graph
        static_ids.zero_()
        static_mask.zero_()
        static_mask[:, 0] = 1  # dummy rows attend to one token, never to nothing
        static_ids[:rows].copy_(torch.from_numpy(ids), non_blocking=True)
        static_mask[:rows].copy_(torch.from_numpy(mask), non_blocking=True)
        captured.replay()
        return out
