"""The plain peer: the server a user would write in an afternoon, and the one to beat on CPU.

FastAPI + uvicorn, a synchronous handler (FastAPI runs it on its thread pool), one ONNX
Runtime call per request on the same engine file and tokenizer that sentiserve serves, the
same ``/v1/sentiment`` answer. No batching, no queue, no limits.

Usage: python benchmarks/plain_server.py --model-repository DIR --port 9000 [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer


class Body(BaseModel):
    text: str
    model: str = "sentiment"


def latest_version(repository: Path, model: str = "sentiment") -> Path:
    versions = [p for p in (repository / model).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def build(repository: Path, threads: int) -> FastAPI:
    folder = latest_version(repository)
    manifest = json.loads((folder / "manifest.json").read_text())
    engine = manifest["engines"][manifest["default_engine"]["cpu"]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / engine["file"]), options)
    inputs = {i.name for i in session.get_inputs()}
    tokenizer = Tokenizer.from_file(str(folder / manifest["tokenizer"]["file"]))
    tokenizer.enable_truncation(manifest["max_length"])
    labels = manifest["labels"]
    app = FastAPI()

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/sentiment")
    def sentiment(body: Body) -> dict[str, object]:
        ids = np.array([tokenizer.encode(body.text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (logits,) = session.run(["logits"], feeds)
        exp = np.exp(logits[0] - logits[0].max())
        probs = exp / exp.sum()
        best = int(probs.argmax())
        scores = {label: float(p) for label, p in zip(labels, probs, strict=True)}
        result = {"label": labels[best], "score": float(probs[best]), "scores": scores}
        return {"model": "sentiment", "version": int(folder.name), "results": [result]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    app = build(Path(args.model_repository), args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
