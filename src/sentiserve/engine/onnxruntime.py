"""ONNX Runtime engine (CPU by default; CUDA and TensorRT providers when present)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sentiserve.engine.tokenizer import segments
from sentiserve.errors import ModelLoadError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)


def device() -> str:
    """``cuda`` when ONNX Runtime can use a GPU here, else ``cpu``."""
    import onnxruntime as ort

    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


def providers_for(dev: str) -> tuple[str, ...]:
    return CUDA_PROVIDERS if dev == "cuda" else (CPU,)


_SHARED_ARENA = threading.Lock()
_shared_arena_ready = False


def _register_shared_arena() -> None:
    """One CPU memory arena for every session of this process (ONNX Runtime's environment
    allocator). Each session otherwise keeps its own arena at its peak: measured with three
    sessions of the int8 MiniLM, 452 MB resident with their own arenas, 338 MB with a shared
    one, at the same throughput (two sessions side by side, rt texts: 805-835 and 788-818
    seq/s; long texts: 100-101 and 100-102)."""
    global _shared_arena_ready
    import onnxruntime as ort

    with _SHARED_ARENA:
        if not _shared_arena_ready:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            ort.create_and_register_allocator(info, None)
            _shared_arena_ready = True


def session_options(threads: int | None) -> object:
    import onnxruntime as ort

    _register_shared_arena()
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.use_env_allocators", "1")
    # The graphs we ship are fused offline, but the static int8 graph still needs the
    # extended level: it turns QDQ pairs into integer kernels (measured, 1 thread, batch 1:
    # basic 13.3 ms, extended 3.2 ms, all 3.2 ms; layout optimisations add nothing here).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Intra-op threads spin between the parallel sections of a run (measured: without
    # spinning a 2-thread call takes 2.5 ms instead of 1.9), but stop spinning when the
    # run ends: a server's event loop needs that core between calls (1 client: p50
    # 3.3 -> 2.9 ms, p99 10.6 -> 4.7 ms; a pool thread otherwise spins a whole core).
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeEngine:
    """Runs an ONNX classifier graph with ONNX Runtime.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads; None lets ONNX Runtime choose (one per core).
        providers: Execution providers in preference order; CPU is always the fallback.
        sep_id: The separator of the tokenizer's pair template: ``token_type_ids`` are
            rebuilt from the ids (``tokenizer.segments``). None: all zeros.
    """

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        providers: Sequence[str] = (CPU,),
        sep_id: int | None = None,
    ) -> None:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or [CPU]
        if CPU not in chosen:
            chosen.append(CPU)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=chosen
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc
        self.name = f"onnxruntime:{path.name}"
        self.sep_id = sep_id
        self.providers: list[str] = list(self._session.get_providers())
        # ONNX Runtime lets several threads call run() on one session at once; with one
        # intra-op thread each run computes on its caller's thread, so one-thread instances
        # can share this session (and its weights) instead of opening one each. With more
        # threads they would also share its thread pool, so those keep a session each.
        self.side_by_side = threads == 1 and self.providers == [CPU]
        self._inputs = [i.name for i in self._session.get_inputs()]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self._inputs:
            raise ModelLoadError(f"{path}: unexpected graph inputs {self._inputs}")

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = (
                np.zeros_like(input_ids)
                if self.sep_id is None
                else segments(input_ids, attention_mask, self.sep_id)
            )
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        (logits,) = self._session.run(["logits"], feeds)
        return np.asarray(logits, dtype=np.float32)
