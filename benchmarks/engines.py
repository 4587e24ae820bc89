"""Engine throughput side by side, in one run on one machine, over the same texts.

PyTorch eager (the fine-tuned model), ONNX Runtime fp32 (fused), static int8 (the default
CPU engine) and dynamic int8, on the rt held-out texts through the serving tokenizer:
batch 1 (latency) and batch 8 (length-sorted). Writes benchmarks/RESULTS.md with the
machine, the versions, the accuracy table from the manifest and the build time.

Usage: python benchmarks/engines.py [--model-repository DIR] [--build-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from results import replace_head
from sentiserve.bench.report import machine
from sentiserve.data import load_corpus
from sentiserve.engine.onnxruntime import OnnxRuntimeEngine
from sentiserve.engine.tokenizer import Batch, Tokenizer
from sentiserve.repository.layout import ModelRepository

Infer = Callable[[Batch], Any]
ACCURACY_TARGET = 0.85


def md(text: str) -> str:
    """Escape a table cell."""
    return text.replace("|", "\\|")


def versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    import sentiserve

    return {
        "python": platform.python_version(),
        "sentiserve": sentiserve.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }


def torch_engine(model_dir: Path, threads: int) -> Infer:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

    def infer(batch: Batch) -> Any:
        with torch.inference_mode():
            return model(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
            ).logits.numpy()

    return infer


def onnx_engine(path: Path, threads: int) -> Infer:
    engine = OnnxRuntimeEngine(path, threads=threads)
    return lambda batch: engine.infer(batch.input_ids, batch.attention_mask)


def time_batches(infer: Infer, batches: list[Batch]) -> tuple[float, list[float]]:
    """Sequences per second and per-batch latencies (ms) over ``batches``."""
    latencies = []
    start = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        infer(b)
        latencies.append((time.perf_counter() - t) * 1000)
    seconds = time.perf_counter() - start
    return sum(len(b.input_ids) for b in batches) / seconds, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="sentiment")
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS.md"))
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    version = ModelRepository(args.model_repository).load(args.model)
    m = version.manifest
    tokenizer = Tokenizer(
        version.file(m.tokenizer.file),
        max_length=m.max_length,
        truncation=m.truncation,
        pad_id=m.pad_id,
    )
    texts = load_corpus("rt").test.texts[: args.texts]
    encoded = tokenizer.encode(texts)
    singles = [tokenizer.pad([e]) for e in encoded]
    ordered = sorted(encoded, key=len)
    eights = [tokenizer.pad(ordered[i : i + 8]) for i in range(0, len(ordered), 8)]

    engines: dict[str, Infer] = {
        "pytorch eager": torch_engine(args.build_dir / "model", args.threads)
    }
    for variant, label in (("fp32", "ORT fp32 fused"), ("int8", "ORT int8 static (QDQ)")):
        engines[label] = onnx_engine(version.file(m.engines[variant].file), args.threads)
    dynamic = args.build_dir / "optimized" / "model.int8-dynamic.onnx"
    if dynamic.exists():
        engines["ORT int8 dynamic"] = onnx_engine(dynamic, args.threads)

    rates: dict[str, dict[str, list[float]]] = {n: {"b1": [], "b8": [], "p50": []} for n in engines}
    for infer in engines.values():  # warm-up
        infer(eights[0])
        infer(singles[0])
    for _ in range(args.repeats):  # interleave engines so drift hits all of them alike
        for name, infer in engines.items():
            rate1, lat1 = time_batches(infer, singles)
            rate8, _ = time_batches(infer, eights)
            rates[name]["b1"].append(rate1)
            rates[name]["p50"].append(statistics.median(lat1))
            rates[name]["b8"].append(rate8)

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rates.items()}
    spread = {n: (min(r["b8"]), max(r["b8"])) for n, r in rates.items()}
    base = med["pytorch eager"]["b8"]
    lines = [
        "# Benchmark results",
        "",
        "Produced by `python benchmarks/engines.py` (`make bench`). Ratios within one run are",
        "what count: this machine is shared and noisy.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {machine()['cpu']}, {os.cpu_count()} cores; engines use {args.threads} threads",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"- model: {m.model} v{m.version}, base {m.provenance.get('base_model')}, "
        f"data {m.provenance.get('dataset')}, max_length {m.max_length}",
        "",
        "## Engine throughput",
        "",
        f"{len(texts)} rt held-out texts, median of {args.repeats} interleaved repeats.",
        "Batch 1: one text at a time, no padding. Batch 8: length-sorted, padded to the longest.",
        "",
        "| engine | batch 1 seq/s | batch 1 p50 ms | batch 8 seq/s (min–max) "
        "| × PyTorch (batch 8) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in med.items():
        lo, hi = spread[name]
        lines.append(
            f"| {name} | {r['b1']:.0f} | {r['p50']:.2f} | {r['b8']:.0f} ({lo:.0f}–{hi:.0f}) "
            f"| {r['b8'] / base:.2f} |"
        )
    default = m.default_engine.get("cpu", "fp32")
    default_label = {"fp32": "ORT fp32 fused", "int8": "ORT int8 static (QDQ)"}[default]
    ratio = med[default_label]["b8"] / base
    lines += [
        "",
        f"Default CPU engine ({default}): **{ratio:.2f}× PyTorch eager** at batch 8 "
        f"(target ≥ 1.4×: {'met' if ratio >= 1.4 else f'missed by {1.4 - ratio:.2f}'}).",
        "",
        "## Accuracy per variant (held-out split, from the manifest)",
        "",
        "| variant | accuracy | F1 | label agreement with fp32 "
        "| max abs Δp alone vs batch of 33 | eligible | note |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, ev in m.evaluation.items():
        if "accuracy" not in ev:
            lines.append(f"| {name} | – | – | – | – | – | {md(ev.get('note', ''))} |")
            continue
        agree = ev.get("agreement")
        delta = ev.get("max_batch_delta")
        lines.append(
            f"| {name} | {ev['accuracy']:.4f} | {ev['f1']:.4f} | "
            f"{'–' if agree is None else f'{agree:.4f}'} | "
            f"{'–' if delta is None else f'{delta:.1e}'} | "
            f"{ev.get('eligible', '–')} | {md(ev.get('note', ''))} |"
        )
    served = m.evaluation[default]["accuracy"]
    verdict = (
        "met"
        if served >= ACCURACY_TARGET
        else f"missed by {100 * (ACCURACY_TARGET - served):.2f} points"
    )
    lines += [
        "",
        f"Held-out accuracy of the default engine ({default}): **{100 * served:.2f}%** "
        f"(target ≥ {100 * ACCURACY_TARGET:.0f}%: {verdict}).",
    ]
    report = args.build_dir / "build_report.json"
    if report.exists():
        build = json.loads(report.read_text())
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in build["seconds"].items())
        lines += [
            "",
            "## Build time",
            "",
            f"`{build['command']}` on this machine: **{build['total_seconds'] / 60:.1f} min** "
            f"end to end ({stages}); target ≤ 20 min.",
        ]
    replace_head(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
