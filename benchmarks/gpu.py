"""Engines on an NVIDIA GPU, side by side in one run: PyTorch eager fp32 and fp16, ONNX
Runtime with the CUDA execution provider, and the TensorRT execution provider where it is
installed, and sentiserve's own PyTorch engine (fp32, fp16, bf16; CUDA graphs on and off), at
batch 1, 8, 32 and 128 and sequence length 32, 128 and 512, for the default MiniLM-L6
model and a BERT-base-sized one (randomly initialised: speed does not depend on the weights).
Engines that cannot run here are listed with the reason. Writes benchmarks/RESULTS-gpu.md
with the GPU model and versions.

Usage: python benchmarks/gpu.py [--out benchmarks/RESULTS-gpu.md] [--runs 30]
On a machine without a CUDA GPU it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BATCHES = (1, 8, 32, 128)
LENGTHS = (32, 128, 512)
HERE = Path(__file__).resolve().parent


WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "good",
    "bad",
    "great",
    "dull",
    "plot",
    "it",
    "is",
    "was",
    "and",
    "of",
    "to",
]
"""The benchmark tokenizer's whole words; gpu_run.py builds its texts from them."""


def save_word_tokenizer(folder: Path) -> None:
    """A small WordPiece tokenizer (letters and a few words): enough for the export's parity
    texts. Benchmarks feed random token ids, so the vocabulary does not matter, and no
    tokenizer has to travel to a GPU machine with no network."""
    from sentiserve.train.tiny import word_tokenizer

    word_tokenizer(WORDS, max_length=512).save_pretrained(folder)


SHAPES: dict[str, tuple[str, dict[str, int]]] = {
    "minilm": (
        "MiniLM-L6-H384 (random)",
        {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
        },
    ),
    "bert-base": ("BERT-base (random)", {}),
    "tiny": (  # BERT's vocabulary (the benchmarks feed random ids), little else: a rehearsal
        "tiny-BERT (random, 2 layers, 64 wide)",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        },
    ),
}
"""Model shapes by ``--models`` name: report name and ``BertConfig`` fields (the rest are
BERT-base's)."""

MODELS = ("minilm", "bert-base")
"""What a benchmark run measures unless told otherwise."""


def bert_config(key: str, **fields: Any) -> Any:
    """The ``BertConfig`` of shape ``key`` (see SHAPES), two labels unless ``fields`` say."""
    from transformers import BertConfig

    return BertConfig(**{"num_labels": 2, **SHAPES[key][1], **fields})


def models(workdir: Path, only: tuple[str, ...] = MODELS) -> dict[str, Path]:
    """Classifiers with random weights in the SHAPES asked for (MiniLM-L6, the default base,
    and BERT-base by default), built from their configs: speed does not depend on the
    weights, and nothing over a few KB has to be carried to the GPU machine."""
    from transformers import AutoModelForSequenceClassification

    out = {}
    for key in only:
        name = SHAPES[key][0]
        folder = workdir / name.split()[0]
        model = AutoModelForSequenceClassification.from_config(
            bert_config(key), attn_implementation="eager"
        )
        model.save_pretrained(folder)
        save_word_tokenizer(folder)
        out[name] = folder
    return out


def time_it(run: Callable[[], Any], sync: Callable[[], None], runs: int) -> float:
    for _ in range(3):
        run()
    sync()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(
    folder: Path,
    runs: int,
    workdir: Path,
    device: str = "cuda",
    shapes: list[tuple[int, int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    from sentiserve.export.onnx import export

    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    shapes = shapes or [(b, n) for n in LENGTHS for b in BATCHES]
    inputs = {s: rng.integers(1000, 20000, size=s, dtype=np.int64) for s in shapes}

    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    for label, dtype in (
        ("pytorch eager fp32", torch.float32),
        ("pytorch eager fp16", torch.float16),
    ):
        m = model.to(device, dtype=dtype).eval()
        for shape in shapes:
            ids = torch.from_numpy(inputs[shape]).to(device)
            mask = torch.ones_like(ids)
            with torch.inference_mode():
                seconds = time_it(partial(m, input_ids=ids, attention_mask=mask), sync, runs)
            rows.append(
                {"engine": label, "batch": shape[0], "length": shape[1], "seconds": seconds}
            )

    # sentiserve's own PyTorch engine (SDPA attention, length buckets, optional CUDA graphs):
    # what `sentiserve serve` runs on a GPU without TensorRT.
    from sentiserve.engine.torch import TorchEngine

    variants = (
        [("fp32", False)]
        if device == "cpu"
        else [("fp32", False), ("fp16", False), ("fp16", True), ("bf16", False), ("bf16", True)]
    )
    for dtype, graphs in variants:
        engine = TorchEngine(folder, device=device, dtype=dtype, max_length=512, cuda_graphs=graphs)
        label = f"sentiserve torch {dtype}" + (" + CUDA graphs" if graphs else "")
        for shape in shapes:
            mask = np.ones(shape, dtype=np.int64)
            run = partial(engine.infer, inputs[shape], mask)
            rows.append(
                {
                    "engine": label,
                    "batch": shape[0],
                    "length": shape[1],
                    "seconds": time_it(run, sync, runs),
                }
            )
        del engine

    onnx_path = workdir / f"{folder.name}.onnx"
    export(folder, onnx_path, max_length=512)
    available = ort.get_available_providers()
    providers = [
        ("onnxruntime CUDA", "CUDAExecutionProvider"),
        ("onnxruntime TensorRT fp16", "TensorrtExecutionProvider"),
    ]
    if device == "cpu":  # a smoke run of this script on a machine without a GPU
        providers.append(("onnxruntime CPU", "CPUExecutionProvider"))
    for label, provider in providers:
        if provider not in available:
            unavailable[label] = (
                f"{provider} not in this onnxruntime build ({', '.join(available)})"
            )
            continue
        options: list[Any] = [{"trt_fp16_enable": True}] if "Tensorrt" in provider else [{}]
        session = ort.InferenceSession(
            str(onnx_path), providers=[provider], provider_options=options
        )
        names = [i.name for i in session.get_inputs()]
        for shape in shapes:
            feed = {
                "input_ids": inputs[shape],
                "attention_mask": np.ones(shape, dtype=np.int64),
                "token_type_ids": np.zeros(shape, dtype=np.int64),
            }
            feed = {k: v for k, v in feed.items() if k in names}
            seconds = time_it(partial(session.run, ["logits"], feed), lambda: None, runs)
            rows.append(
                {"engine": label, "batch": shape[0], "length": shape[1], "seconds": seconds}
            )
    return rows, unavailable


def versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        out["tensorrt"] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS-gpu.md"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cpu: a quick smoke run of the script itself, not a benchmark",
    )
    parser.add_argument(
        "--shapes",
        default=None,
        help="batch x length list, e.g. 1x16,2x32 (default: 1,8,32 x 128,512)",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated models from {', '.join(SHAPES)} (default: {', '.join(MODELS)})",
    )
    args = parser.parse_args()
    only = tuple(args.models.split(","))
    if unknown := set(only) - set(SHAPES):
        parser.error(f"unknown model {', '.join(sorted(unknown))}: choose from {', '.join(SHAPES)}")
    import torch

    shapes = None
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA GPU visible to PyTorch here: nothing measured, nothing written",
            file=sys.stderr,
        )
        return
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (CPU smoke run)"
    lines = [
        "# GPU engines side by side",
        "",
        f"Written by `python benchmarks/gpu.py`. GPU: {gpu}. Median of {args.runs} runs "
        "after 3 warm-up runs, random token ids, no padding.",
        "",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in models(Path(tmp), only).items():
            print(f"measuring {name}", file=sys.stderr)
            rows, unavailable = measure(folder, args.runs, Path(tmp), args.device, shapes)  # type: ignore[arg-type]
            lines += [
                f"## {name}",
                "",
                "| engine | batch | length | ms | sequences/s |",
                "| --- | --- | --- | --- | --- |",
            ]
            for r in rows:
                ms, rate = r["seconds"] * 1000, r["batch"] / r["seconds"]
                lines.append(
                    f"| {r['engine']} | {r['batch']} | {r['length']} | {ms:.2f} | {rate:,.0f} |"
                )
            for label, reason in unavailable.items():
                lines.append(f"\nNot measured: {label}: {reason}.")
            lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
