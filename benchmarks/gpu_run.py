"""The prepared GPU run: everything to measure on a GPU machine, in one call of a few minutes,
written to one report. It is rehearsed on the CPU (``--smoke``, run in CI, on a tiny BERT),
so that a run on the GPU machine does not fail on a typo.

Steps, each recorded in the report (a step that fails is reported and the rest still run):

1. ``sentiserve doctor --json``: driver, GPU, CUDA, cuDNN, ONNX Runtime, TensorRT.
2. ``benchmarks/gpu.py``: PyTorch eager, sentiserve's torch engine (fp32/fp16/bf16, CUDA
   graphs on/off) and ONNX Runtime where it has CUDA, at batch 1/8/32/128 x length
   32/128/512, for MiniLM-L6 and BERT-base (random weights: speed does not depend on them,
   and nothing big has to travel to the GPU machine).
3. Serving: a model repository with a MiniLM-shaped torch engine (random weights), served by
   ``sentiserve serve`` on the GPU; ``sentiserve bench`` at 1, 32 and 128 clients with one
   text per request, and 64 clients with 32 texts per request, next to the engine's own
   ceiling (sorted batches of 128); the server's CPU time per request.
4. Fine-tuning: 200 steps of BERT-base (random init) with bf16 autocast, batch 32, length
   128, to set against the tutorial's 2 h 14 min on a T4.

Usage:
  python benchmarks/gpu_run.py --out benchmarks/RESULTS-gpu.md       # on the GPU
  python benchmarks/gpu_run.py --smoke --out /tmp/RESULTS-gpu.md      # CPU rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def step(name: str, sections: list[str], run: Callable[[], list[str]]) -> None:
    start = time.monotonic()
    print(f"== {name}", file=sys.stderr, flush=True)
    try:
        lines = run()
    except Exception:  # a failed step is a finding for the report, not the end of the run
        lines = ["```", traceback.format_exc()[-3000:], "```"]
    sections += [f"## {name}", "", *lines, "", f"({time.monotonic() - start:.0f} s)", ""]


def doctor() -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "sentiserve", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    lines = ["| check | status | found |", "| --- | --- | --- |"]
    lines += [f"| {c['name']} | {c['status']} | {c['found']} |" for c in report["checks"]]
    return lines


def engines(smoke: bool, workdir: Path) -> list[str]:
    out = workdir / "engines.md"
    args = [sys.executable, str(HERE / "gpu.py"), "--out", str(out)]
    if smoke:
        args += ["--device", "cpu", "--runs", "1", "--shapes", "1x16,2x32", "--models", "tiny"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(done.stderr[-3000:])
    text = out.read_text().split("\n", 2)[-1]  # the engine tables, without gpu.py's title
    return [line.replace("## ", "### ") for line in text.splitlines()]


def random_repository(root: Path, smoke: bool = False) -> Path:
    """A repository whose only engine is a MiniLM-shaped torch model with random weights (a
    tiny BERT for the rehearsal)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gpu import bert_config, save_word_tokenizer
    from sentiserve.repository.builder import write_version

    folder = root / "minilm"
    config = bert_config(
        "tiny" if smoke else "minilm",
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    save_word_tokenizer(folder)
    AutoTokenizer.from_pretrained(folder)  # it loads
    repository = root / "model_repository"
    write_version(
        repository,
        "sentiment",
        labels=["negative", "positive"],
        max_length=256,
        pad_id=0,
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        tokenizer_file=folder / "tokenizer.json",
        engine_files={"torch": folder / "model.safetensors"},
        default_engine={"cpu": "torch", "cuda": "torch"},
        provenance={"note": "random weights, for speed measurements only"},
    )
    return repository


def texts(n: int) -> list[str]:
    """Texts of 8 to 97 words the benchmark tokenizer knows whole."""
    from gpu import WORDS

    return [
        " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(8 + (i * 13) % 90))
        for i in range(n)
    ]


def serving(smoke: bool, workdir: Path) -> list[str]:
    from sentiserve.local.ready import free_port, is_ready, serve_command, wait_until
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    repository = random_repository(workdir, smoke)
    model = open_model(ModelRepository(repository).load("sentiment"))
    sample = texts(200 if smoke else 2000)  # the rehearsal runs each step, not the amount
    data = workdir / "texts.txt"
    data.write_text("\n".join(sample) + "\n")
    model.probabilities(sample[: 32 if smoke else 256])  # warm up (CUDA kernels, allocator)
    start = time.perf_counter()
    for _ in range(1 if smoke else 3):
        model.probabilities(sample)
    ceiling = (1 if smoke else 3) * len(sample) / (time.perf_counter() - start)
    del model
    http, grpc, metrics = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        serve_command(repository, http, grpc, metrics),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http}"
    try:
        if not wait_until(lambda: is_ready(url), 300):
            raise RuntimeError("the server did not become ready")
        lines = [
            f"Engine ceiling (the served torch engine alone, length-sorted batches): "
            f"{ceiling:,.0f} texts/s on {device_name()}.",
            "",
            "| clients | texts/request | requests/s | texts/s | / ceiling | p50 ms | p99 ms | "
            "server CPU ms/request |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        levels = [(1, 1)] if smoke else [(1, 1), (32, 1), (128, 1), (64, 32)]
        for clients, per in levels:
            cpu_before = process_cpu(server.pid)
            seconds, warmup = (1, 0.5) if smoke else (15, 2)  # the rehearsal: each step runs
            row = bench(url, metrics, data, clients, per, seconds, warmup)
            cpu = process_cpu(server.pid) - cpu_before
            rate = row["throughput"] * per
            lines.append(
                f"| {clients} | {per} | {row['throughput']:,.1f} | {rate:,.0f} | "
                f"{rate / ceiling:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.1f} | "
                f"{1000 * cpu / max(row['requests'], 1):.2f} |"
            )
        return lines
    finally:
        server.terminate()
        server.wait(60)


def bench(
    url: str, metrics: int, data: Path, clients: int, per: int, seconds: float, warmup: float
) -> Any:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "bench",
            "--url",
            url,
            "--data",
            str(data),
            "--concurrency",
            str(clients),
            "--texts-per-request",
            str(per),
            "--duration-s",
            str(seconds),
            "--warmup-s",
            str(warmup),
            "--metrics-url",
            f"http://127.0.0.1:{metrics}/metrics",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])["results"][0]
    result["requests"] = result.get("requests", result["throughput"] * seconds)
    return result


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "the CPU"


def fine_tuning(smoke: bool) -> list[str]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from gpu import bert_config

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    config = bert_config("tiny" if smoke else "bert-base")
    model = AutoModelForSequenceClassification.from_config(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    steps, batch, length = (5, 4, 32) if smoke else (200, 32, 128)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator).to(device)
    labels = torch.randint(0, 2, (batch,), generator=generator).to(device)
    times = []
    for _ in range(steps + 5):
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    per_step = statistics.median(times[5:])
    tutorial_steps = 3 * 25_000 / 32  # IMDb train, 3 epochs, batch 32
    return [
        f"{'BERT-base' if not smoke else 'a tiny BERT (smoke)'} fine-tuning on {device_name()}: "
        f"{steps} steps, batch {batch}, length {length}, bf16 autocast: median "
        f"{per_step * 1000:.1f} ms/step ({batch / per_step:,.0f} examples/s).",
        "",
        f"The tutorial's run (IMDb, 3 epochs, batch 32: {tutorial_steps:,.0f} steps; 2 h 14 min "
        f"on a T4) would take about {tutorial_steps * per_step / 60:.1f} min at this rate "
        "(length 128; IMDb reviews truncated to 512 cost more per step).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS-gpu.md"))
    parser.add_argument("--smoke", action="store_true", help="a quick CPU rehearsal")
    args = parser.parse_args()
    sections = [
        "# GPU run: doctor, engines, serving, fine-tuning",
        "",
        f"Written by `python benchmarks/gpu_run.py{' --smoke' if args.smoke else ''}` on "
        f"{platform.node()} ({device_name() if not args.smoke else 'CPU rehearsal'}), "
        f"Python {platform.python_version()}.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="sentiserve-gpu-") as tmp:
        work = Path(tmp)
        step("Doctor", sections, doctor)
        step("Engines", sections, lambda: engines(args.smoke, work))
        step("Serving on the device", sections, lambda: serving(args.smoke, work))
        step("Fine-tuning", sections, lambda: fine_tuning(args.smoke))
    Path(args.out).write_text("\n".join(sections) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
