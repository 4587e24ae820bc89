"""Infinity (``infinity_emb``) as its documentation sets it up for a classifier on CPU: the
``optimum`` engine (ONNX Runtime through Optimum's ``ORTModelForSequenceClassification``
and a transformers pipeline), its own dynamic batching (``--batch-size``), on the same int8
engine file. Infinity reads a Hugging Face folder, so this builds one in a temporary folder:
the fine-tuned model's config and tokenizer files (``--model-dir``) beside a link to the
model repository's CPU engine; ONNX graph optimisation is off (the file is already
optimised and quantized). Infinity serves a model as a classifier only when its config names
a ``...ForSequenceClassification`` architecture; sentiserve's mean-pooled head is its own
class (``MeanPooledClassifier``), and the pooling is inside the ONNX graph, so the copied
config names ``BertForSequenceClassification``. Answers ``POST /classify``
(``{"input": [text], "model"}``).

Usage: .peers/infinity/bin/python benchmarks/peers/infinity_server.py --model-repository DIR
       --port 9000 [--model-dir build/model] [--max-batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import run_until_stopped
from engine import MODEL, Engine

ROOT = Path(__file__).resolve().parents[2]
HF_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def hf_folder(model_dir: Path, engine_file: Path, into: Path) -> Path:
    if not (model_dir / "config.json").exists():
        sys.exit(f"no fine-tuned model in {model_dir}: run `make model` first")
    for name in HF_FILES:
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, into / name)
    config = json.loads((into / "config.json").read_text())
    config["architectures"] = [f"{config['model_type'].capitalize()}ForSequenceClassification"]
    (into / "config.json").write_text(json.dumps(config, indent=1))
    (into / "model_quantized.onnx").symlink_to(engine_file.resolve())
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "build" / "model")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args()
    engine_file = Engine(args.model_repository).engine_file
    folder = Path(tempfile.mkdtemp(prefix="infinity-peer-"))
    command = [
        str(Path(sys.executable).parent / "infinity_emb"),
        "v2",
        "--model-id",
        str(hf_folder(args.model_dir, engine_file, folder)),
        "--served-model-name",
        MODEL,
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--onnx-disable-optimize",
        "--batch-size",
        str(args.max_batch_size),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--no-model-warmup",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    run_until_stopped(command, env, folder)


if __name__ == "__main__":
    main()
