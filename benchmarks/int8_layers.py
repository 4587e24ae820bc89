"""Which matmuls static int8 should leave in fp32: agreement with fp32 against speed.

Quantizes the build's fused fp32 graph (``build/optimized/model.onnx``) with the feed-forward
output projection of the first 0, 1, 2, 3 or all encoder layers kept in fp32, then measures
each against the fp32 graph:

- label agreement and mean / p99 |Δp| over 5,000 rt texts that calibration did not see
  (training texts 2,000-5,999 and the validation split; the held-out test split is not read);
- throughput of two one-thread sessions side by side over length-sorted batches of 32 (the
  ceiling ``benchmarks/compare.py`` measures), best of three interleaved rounds.

Writes an "int8: layers kept in fp32" section at the end of benchmarks/RESULTS.md.

Usage: python benchmarks/int8_layers.py [--build build]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from results import replace_section

HERE = Path(__file__).resolve().parent
SECTION = "## int8: layers kept in fp32 (`benchmarks/int8_layers.py`)"
KEPT = {
    "none": None,
    "layer 0": r"layer\.0/output/dense/MatMul$",
    "layers 0-1": r"layer\.[01]/output/dense/MatMul$",
    "layers 0-2 (default)": r"layer\.[012]/output/dense/MatMul$",
    "layers 0-3": r"layer\.[0-3]/output/dense/MatMul$",
    "all layers": r"layer\.\d+/output/dense/MatMul$",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    from compare import side_by_side_rate, sorted_batches
    from sentiserve.bench.report import machine
    from sentiserve.data import load_corpus
    from sentiserve.engine.onnxruntime import OnnxRuntimeEngine
    from sentiserve.engine.predict import predict_probabilities
    from sentiserve.engine.tokenizer import Tokenizer, Truncation
    from sentiserve.optimize.quantize import CALIBRATION_TEXTS, static_int8

    fused = args.build / "optimized" / "model.onnx"
    if not fused.is_file():
        sys.exit(f"{fused} is missing: run `sentiserve build` first")
    corpus = load_corpus("rt")
    tokenizer = Tokenizer(
        args.build / "model" / "tokenizer.json", max_length=256, truncation=Truncation.HEAD_TAIL
    )
    texts = [*corpus.train.texts[2000:6000], *corpus.validation.texts]
    calibration = corpus.train.texts[:CALIBRATION_TEXTS]
    batches = sorted_batches(tokenizer, tokenizer.encode(corpus.train.texts[:3000]))

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="int8-layers-") as tmp:
        paths = {"fp32": fused}
        for name, pattern in KEPT.items():
            print(f"quantizing: {name} kept in fp32", file=sys.stderr, flush=True)
            paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            keep = [re.compile(pattern)] if pattern else []
            static_int8(fused, paths[name], tokenizer, calibration, keep=keep)
        engines = {n: [OnnxRuntimeEngine(p, threads=1) for _ in range(2)] for n, p in paths.items()}
        reference = predict_probabilities(engines["fp32"][0], tokenizer, texts)
        for name in KEPT:
            p = predict_probabilities(engines[name][0], tokenizer, texts)
            delta = np.abs(p[:, 1] - reference[:, 1])
            rows[name] = {
                "agreement": float((p.argmax(1) == reference.argmax(1)).mean()),
                "mean_dp": float(delta.mean()),
                "p99_dp": float(np.quantile(delta, 0.99)),
            }
        rates: dict[str, list[float]] = {n: [] for n in engines}
        for _ in range(3):
            for name, pair in engines.items():
                rates[name].append(side_by_side_rate(pair, batches))
    fp32_rate = max(rates["fp32"])
    info = machine()
    lines = [
        SECTION,
        "",
        f"{info['cpu']} ({info['cores']} cores), Python {info['python']}. Agreement and "
        "|Δp| (positive-class probability) against the fused fp32 "
        f"graph over {len(texts):,} rt texts calibration did not see; throughput: two "
        "one-thread sessions side by side, 3,000 texts in length-sorted batches of 32, best "
        f"of three interleaved rounds (fp32: {fp32_rate:.0f} seq/s).",
        "",
        "| FFN output kept in fp32 | agreement | mean \\|Δp\\| | p99 \\|Δp\\| | seq/s | × fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        rate = max(rates[name])
        lines.append(
            f"| {name} | {row['agreement']:.4f} | {row['mean_dp']:.4f} | {row['p99_dp']:.4f} "
            f"| {rate:.0f} | {rate / fp32_rate:.2f} |"
        )
    replace_section(args.out, SECTION, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
