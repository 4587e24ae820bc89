"""The one engine every peer server runs: the same int8 ONNX file and tokenizer that
sentiserve serves (the model repository's newest version, its CPU default engine), through
plain ONNX Runtime and ``tokenizers``, so the serving comparison measures servers and their
batching, not models.

Needs only numpy, onnxruntime and tokenizers, so it imports in every peer's own virtual
environment. A batch is padded to its longest text; each text gets its label and scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MODEL = "sentiment"


def newest_version(repository: Path, model: str = MODEL) -> Path:
    versions = [p for p in (repository / model).iterdir() if p.name.isdigit()]
    if not versions:
        raise SystemExit(f"no version of {model!r} in {repository}: run `make model` first")
    return max(versions, key=lambda p: int(p.name))


class Engine:
    """The CPU default engine of ``repository``'s newest ``sentiment`` version."""

    def __init__(self, repository: str | Path, threads: int = 1) -> None:
        self.folder = newest_version(Path(repository))
        manifest = json.loads((self.folder / "manifest.json").read_text())
        engine = manifest["engines"][manifest["default_engine"]["cpu"]]
        self.engine_file = self.folder / engine["file"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.engine_file), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(self.folder / manifest["tokenizer"]["file"]))
        self.tokenizer.enable_truncation(manifest["max_length"])
        self.labels: list[str] = manifest["labels"]
        self.version = int(self.folder.name)

    def logits(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:  # encode_batch would hand one text to a thread pool
            encoded = [self.tokenizer.encode(texts[0]).ids]
        else:
            encoded = [e.ids for e in self.tokenizer.encode_batch(texts)]
        width = max(len(ids) for ids in encoded)
        ids = np.zeros((len(encoded), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (logits,) = self.session.run(["logits"], feeds)
        return np.asarray(logits)

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: ``{"label", "score", "scores"}`` (softmax over the model's labels), the
        shape of one result in sentiserve's ``/v1/sentiment`` answer."""
        logits = self.logits(texts)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return [
            {
                "label": self.labels[int(b)],
                "score": float(p[b]),
                "scores": dict(zip(self.labels, map(float, p), strict=True)),
            }
            for b, p in zip(best, probs, strict=True)
        ]
