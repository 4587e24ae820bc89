"""The served form of a model version: its tokenizer and engine, exactly as a server runs
them. ``sentiserve evaluate``, ``sentiserve score`` and the servers all build models here.

Which engine runs where:

- **CPU**: the manifest's ``cpu`` default (static int8 ONNX), on ONNX Runtime.
- **GPU with onnxruntime-gpu**: the manifest's ``cuda`` default when it is an ONNX or
  TensorRT engine, on ONNX Runtime's TensorRT/CUDA providers.
- **GPU without it** (PyTorch with CUDA only, the common case): the ``torch`` engine, the
  fine-tuned weights in fp16 with SDPA attention. The manifest's ``cuda`` default names it
  when the version has no TensorRT plan.

The device is ``cuda`` when ONNX Runtime or PyTorch can use a GPU here, else ``cpu``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine, Temperature, runs_side_by_side
from sentiserve.engine.onnxruntime import CPU, OnnxRuntimeEngine, providers_for
from sentiserve.engine.onnxruntime import device as onnx_device
from sentiserve.engine.predict import predict_probabilities
from sentiserve.engine.tokenizer import Tokenizer, Truncation
from sentiserve.errors import ModelNotFoundError
from sentiserve.repository.layout import ModelVersion
from sentiserve.repository.manifest import EngineEntry

TORCH = "torch"
"""The variant name of the PyTorch engine (``model.safetensors`` + ``config.json``)."""


def detect_device() -> str:
    """``cuda`` when ONNX Runtime or PyTorch can use a GPU here, else ``cpu``."""
    if onnx_device() == "cuda":
        return "cuda"
    from sentiserve.engine.torch import cuda_available

    return "cuda" if cuda_available() else "cpu"


@dataclass
class ServedModel:
    """A loaded model version ready to classify texts."""

    version: ModelVersion
    variant: str
    tokenizer: Tokenizer
    engine: Engine
    device: str
    open_engine: Callable[[int | None], Engine]
    """Another instance of this engine (its own session), with this many CPU threads."""

    def instances(self, count: int, threads: int | None) -> list[Engine]:
        """``count`` engines for instances that run side by side, ``engine`` (opened with
        ``threads``) first: ``engine`` itself for every one where it runs side by side
        (:func:`~sentiserve.engine.base.runs_side_by_side`: its weights once, each run on
        its caller's thread), else a session of its own for each of the others."""
        if runs_side_by_side(self.engine):
            return [self.engine] * count
        return [self.engine, *(self.open_engine(threads) for _ in range(count - 1))]

    @property
    def labels(self) -> list[str]:
        return self.version.manifest.labels

    @property
    def temperature(self) -> Temperature:
        """What logits are divided by (one temperature, or one per label)."""
        divisor = self.version.manifest.divisor
        return np.asarray(divisor, dtype=np.float64) if isinstance(divisor, list) else divisor

    def probabilities(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> npt.NDArray[np.float32]:
        """Calibrated class probabilities per text, or per (text, pair) (one sigmoid per
        label for a multi-label model), in length-sorted padded batches."""
        return predict_probabilities(
            self.engine,
            self.tokenizer,
            texts,
            temperature=self.temperature,
            task=self.version.manifest.task,
            pairs=pairs,
        )


def choose_variant(version: ModelVersion, device: str, engine: str | None) -> str:
    """The engine to serve: ``engine`` if given, else the manifest's default for ``device``,
    except that on a GPU an ONNX default without onnxruntime-gpu becomes ``torch``."""
    manifest = version.manifest
    variant = engine or manifest.engine_for(device)
    if variant not in manifest.engines:
        raise ModelNotFoundError(
            f"{manifest.model} v{manifest.version} has no engine {variant!r} "
            f"(engines: {', '.join(manifest.engines)})"
        )
    entry = manifest.engines[variant]
    gpu_onnx_missing = device == "cuda" and entry.format == "onnx" and onnx_device() == "cpu"
    if engine is None and gpu_onnx_missing and TORCH in manifest.engines:
        return TORCH
    return variant


def open_model(
    version: ModelVersion,
    *,
    engine: str | None = None,
    threads: int | None = None,
    truncation: Truncation | None = None,
    device: str | None = None,
) -> ServedModel:
    """Build the tokenizer and engine of ``version``; ``engine`` None takes the default for
    this device (see the module docstring).

    Raises:
        ModelNotFoundError: ``engine`` is not one of the version's engines, or is a
            TensorRT plan (Triton serves those).
    """
    manifest = version.manifest
    dev = device or detect_device()
    variant = choose_variant(version, dev, engine)
    entry = manifest.engines[variant]
    tokenizer = Tokenizer(
        version.file(manifest.tokenizer.file),
        max_length=manifest.max_length,
        truncation=truncation or manifest.truncation,
        pad_id=manifest.pad_id,
    )
    factory = _engine_factory(version, variant, entry, dev, tokenizer.sep_id)
    return ServedModel(version, variant, tokenizer, factory(threads), dev, factory)


def _engine_factory(
    version: ModelVersion, variant: str, entry: EngineEntry, device: str, sep_id: int | None
) -> Callable[[int | None], Engine]:
    if entry.format == "onnx":
        path = version.file(entry.file)
        providers = providers_for(onnx_device() if device == "cuda" else "cpu")

        def onnx_engine(threads: int | None) -> Engine:
            return OnnxRuntimeEngine(
                path, threads=threads, providers=providers or (CPU,), sep_id=sep_id
            )

        return onnx_engine
    if entry.format == TORCH:
        from sentiserve.engine.torch import TorchEngine

        folder = version.file(entry.file).parent
        dtype = "fp16" if device == "cuda" else "fp32"
        max_length = version.manifest.max_length

        def torch_engine(threads: int | None) -> Engine:
            return TorchEngine(
                folder,
                device=device,
                dtype=dtype,
                max_length=max_length,
                threads=threads,
                sep_id=sep_id,
            )

        return torch_engine
    raise ModelNotFoundError(
        f"engine {variant!r} is a {entry.format} file; serve it with Triton "
        "(sentiserve triton) or pick an ONNX or torch engine"
    )
