"""The served form of a model version: its tokenizer and engine, exactly as a server runs
them. ``sentiserve evaluate`` and the servers both build models through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine
from sentiserve.engine.onnxruntime import CPU, OnnxRuntimeEngine, device, providers_for
from sentiserve.engine.predict import predict_probabilities
from sentiserve.engine.tokenizer import Tokenizer, Truncation
from sentiserve.errors import ModelNotFoundError
from sentiserve.repository.layout import ModelVersion


@dataclass
class ServedModel:
    """A loaded model version ready to classify texts."""

    version: ModelVersion
    variant: str
    tokenizer: Tokenizer
    engine: Engine
    engine_file: Path
    providers: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return self.version.manifest.labels

    @property
    def device(self) -> str:
        return "cpu" if self.providers == (CPU,) else "cuda"

    def open_engine(self, threads: int | None) -> Engine:
        """Another session of this model's engine (an engine instance of its own)."""
        return OnnxRuntimeEngine(self.engine_file, threads=threads, providers=self.providers)

    def probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Class probabilities per text, computed in length-sorted padded batches."""
        return predict_probabilities(self.engine, self.tokenizer, texts)


def open_model(
    version: ModelVersion,
    *,
    engine: str | None = None,
    threads: int | None = None,
    truncation: Truncation | None = None,
) -> ServedModel:
    """Build the tokenizer and engine of ``version``; ``engine`` None takes the manifest's
    default for this device.

    Raises:
        ModelNotFoundError: ``engine`` is not one of the version's engines.
    """
    manifest = version.manifest
    dev = device()
    variant = engine or manifest.engine_for(dev)
    if variant not in manifest.engines:
        raise ModelNotFoundError(
            f"{manifest.model} v{manifest.version} has no engine {variant!r} "
            f"(engines: {', '.join(manifest.engines)})"
        )
    entry = manifest.engines[variant]
    if entry.format != "onnx":
        raise ModelNotFoundError(
            f"engine {variant!r} is a {entry.format} file; serve it with Triton "
            "(sentiserve triton) or pick an ONNX engine"
        )
    providers = providers_for(dev)
    tokenizer = Tokenizer(
        version.file(manifest.tokenizer.file),
        max_length=manifest.max_length,
        truncation=truncation or manifest.truncation,
        pad_id=manifest.pad_id,
    )
    path = version.file(entry.file)
    onnx_engine = OnnxRuntimeEngine(path, threads=threads, providers=providers)
    return ServedModel(version, variant, tokenizer, onnx_engine, path, tuple(providers))
