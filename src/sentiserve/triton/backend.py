"""Triton python-backend models over a sentiserve model version.

Every generated ``model.py`` is one line that imports :class:`TritonPythonModel` from here, so
the code Triton runs is this module, typed and tested with the rest of sentiserve. The
``sentiserve_role`` parameter of the model's ``config.pbtxt`` picks what the model does:

- ``classify`` (the CPU form): TEXT -> LABEL, PROBABILITIES. Tokenizes and runs ONNX Runtime
  through :func:`sentiserve.repository.served.open_model`, exactly as the embedded server does.
- ``tokenize`` (first step of the GPU ensemble): TEXT -> input_ids, attention_mask, padded
  to ``sentiserve_pad_to`` tokens so Triton's dynamic batcher can join requests.
- ``postprocess`` (last step of the GPU ensemble): logits -> LABEL, PROBABILITIES.
- ``engine``: token ids -> logits with ONNX Runtime on CPU. A stand-in for Triton's
  onnxruntime backend, which the bundled Triton lacks, so the GPU ensemble's wiring can run
  (in tests) on a machine without it.

Triton hands ``execute`` every request of a dynamic batch at once; their texts go through the
engine together (length-sorted, padded per batch) and the answers are split back per request.

This module runs inside Triton's python stub (``triton_python_backend_utils`` exists only
there), never inside the embedded server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROLE = "sentiserve_role"


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as Triton passes it, in JSON)."""
    raw = model_config.get("parameters", {})
    return {key: value.get("string_value", "") for key, value in raw.items()}


def decode_texts(column: npt.NDArray[Any]) -> list[str]:
    """A TEXT tensor (bytes objects, any shape) as a flat list of strings."""
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in column.reshape(-1)]


def split_rows(array: npt.NDArray[Any], counts: Sequence[int]) -> list[npt.NDArray[Any]]:
    """Rows of ``array`` cut back into consecutive pieces of ``counts`` rows."""
    bounds = np.cumsum(counts)[:-1]
    return list(np.split(array, bounds))


def label_column(labels: Sequence[str], probabilities: npt.NDArray[np.float32]) -> Any:
    """The LABEL tensor, ``[n, 1]`` bytes objects, for a batch of probabilities."""
    names = [labels[i].encode() for i in probabilities.argmax(axis=1)]
    return np.array(names, dtype=np.object_).reshape(-1, 1)


class TritonPythonModel:
    """The entry point Triton's python backend looks up in ``model.py``."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = parameters(config)
        self.role = params.get(ROLE, "classify")
        folder = Path(args["model_repository"])
        version = int(args["model_version"])
        if self.role == "classify":
            self._init_classify(folder, version, params)
        elif self.role == "tokenize":
            self._init_tokenize(folder / str(version), params)
            self.outputs = [tensor["name"] for tensor in config["output"]]
        elif self.role == "postprocess":
            self.labels = json.loads(params["sentiserve_labels"])
            divisor = json.loads(params.get("sentiserve_temperature", "1.0"))
            # One temperature, or one per label (a calibrated multi-label model).
            self.temperature = (
                np.asarray(divisor, dtype=np.float64)
                if isinstance(divisor, list)
                else float(divisor)
            )
            self.task = params.get("sentiserve_task", "single_label_classification")
        elif self.role == "engine":
            from sentiserve.engine.onnxruntime import OnnxRuntimeEngine

            self.engine = OnnxRuntimeEngine(folder / str(version) / "model.onnx")
        else:
            raise pb_utils.TritonModelException(f"unknown {ROLE} {self.role!r}")

    def _init_classify(self, folder: Path, version: int, params: dict[str, str]) -> None:
        from sentiserve.repository.layout import ModelRepository
        from sentiserve.repository.served import open_model

        loaded = ModelRepository(folder.parent).load(folder.name, version)
        threads = int(params.get("sentiserve_threads", "0")) or None
        self.served = open_model(
            loaded, engine=params.get("sentiserve_engine") or None, threads=threads
        )
        self.labels = self.served.labels

    def _init_tokenize(self, version_dir: Path, params: dict[str, str]) -> None:
        from sentiserve.engine.tokenizer import Tokenizer, Truncation

        self.tokenizer = Tokenizer(
            version_dir / "tokenizer.json",
            max_length=int(params["sentiserve_max_length"]),
            truncation=Truncation(params.get("sentiserve_truncation", "head_tail")),
            pad_id=int(params.get("sentiserve_pad_id", "0")),
        )
        self.pad_to = int(params.get("sentiserve_pad_to", "0"))

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        if self.role == "postprocess":
            return [self._guard(self._postprocess, r) for r in requests]
        if self.role == "engine":
            return [self._guard(self._engine, r) for r in requests]
        texts = [decode_texts(pb.get_input_tensor_by_name(r, "TEXT").as_numpy()) for r in requests]
        if self.role == "tokenize":
            return [self._guard(self._tokenize, group) for group in texts]
        pairs = [pb.get_input_tensor_by_name(r, "TEXT_PAIR") for r in requests]
        if any(p is not None for p in pairs):  # pairs: each request on its own
            return [
                self._guard(
                    self._classify, (group, None if p is None else decode_texts(p.as_numpy()))
                )
                for group, p in zip(texts, pairs, strict=True)
            ]
        try:
            probabilities = self.served.probabilities([t for group in texts for t in group])
        except Exception:
            # One bad request (a text too long under the reject policy) must not fail the
            # requests batched with it: answer each on its own, so only that one errs.
            return [self._guard(self._classify, (group, None)) for group in texts]
        return [self._answer(p) for p in split_rows(probabilities, [len(g) for g in texts])]

    def _guard(self, step: Any, argument: Any) -> Any:
        """``step(argument)``, or an error response: INVALID_ARG for the client's mistakes
        (a sentiserve error with a 4xx status, such as a text too long to accept)."""
        from sentiserve.errors import SentiserveError

        try:
            return step(argument)
        except Exception as exc:
            error = self._pb.TritonError
            client = isinstance(exc, SentiserveError) and exc.status < 500
            code = error.INVALID_ARG if client else error.INTERNAL
            return self._pb.InferenceResponse(error=error(str(exc), code))

    def _classify(self, request: tuple[list[str], list[str] | None]) -> Any:
        texts, pairs = request
        return self._answer(self.served.probabilities(texts, pairs))

    def _answer(self, probs: npt.NDArray[np.float32]) -> Any:
        pb = self._pb
        return pb.InferenceResponse(
            output_tensors=[
                pb.Tensor("LABEL", label_column(self.labels, probs)),
                pb.Tensor("PROBABILITIES", probs.astype(np.float32)),
            ]
        )

    def _tokenize(self, texts: list[str]) -> Any:
        batch = self.tokenizer.pad(self.tokenizer.encode(texts))
        ids, mask = batch.input_ids, batch.attention_mask
        if self.pad_to > ids.shape[1]:
            extra = self.pad_to - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=self.tokenizer.pad_id)
            mask = np.pad(mask, ((0, 0), (0, extra)))
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        tensors = [self._pb.Tensor(name, arrays[name]) for name in self.outputs]
        return self._pb.InferenceResponse(output_tensors=tensors)

    def _postprocess(self, request: Any) -> Any:
        from sentiserve.engine.base import activate

        logits = self._pb.get_input_tensor_by_name(request, "logits").as_numpy()
        return self._answer(activate(logits.astype(np.float32), self.task, self.temperature))

    def _engine(self, request: Any) -> Any:
        ids, mask = (
            self._pb.get_input_tensor_by_name(request, name).as_numpy()
            for name in ("input_ids", "attention_mask")
        )
        logits = self.engine.infer(ids.astype(np.int64), mask.astype(np.int64))
        return self._pb.InferenceResponse(output_tensors=[self._pb.Tensor("logits", logits)])

    def finalize(self) -> None:
        self.__dict__.pop("served", None)
