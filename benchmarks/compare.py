"""Serving side by side, in ONE run on one machine, with one client and the same texts.

Peers (each started, measured and stopped here):
1. naive: FastAPI + uvicorn + ``transformers.pipeline`` on the fine-tuned PyTorch model,
   one forward pass per request (benchmarks/naive_server.py).
2. triton: the real Triton 2.51 (bundled in nvidia-pytriton, ``sentiserve triton``) with
   the python-backend form of the same model version (same int8 engine, Triton's dynamic
   batching on), over KServe v2 HTTP; next to it sentiserve over the same protocol.
3. sentiserve: ``sentiserve serve`` with its defaults; on ``long`` also with length grouping
   off (arrival-order batches padded to their longest), to show what grouping is worth.
4. ceiling: no server, the same engine over the same texts in length-sorted batches of 32.

The client is ``sentiserve bench``'s (aiohttp, closed loop, one text per request, warm-up
excluded): the friendly v1 API for naive and sentiserve, KServe v2 HTTP for the pair
"triton (v2)" / "sentiserve (v2)". The client shares the machine's cores with the server,
as any client on one box would. Memory is summed over a peer's processes (Triton's python
stub included).
Writes benchmarks/RESULTS-serving.md (and the raw JSON beside it).

Usage: python benchmarks/compare.py [--model-repository DIR] [--build-dir DIR] [--repeat 2]
       [--duration 10] [--warmup 2] [--data rt,long] [--no-triton] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.bench.report import machine
from sentiserve.bench.runner import BenchConfig, run_levels
from sentiserve.bench.texts import BenchTexts, load_texts
from sentiserve.localcluster import free_port, is_ready

HERE = Path(__file__).resolve().parent
PEERS = ("naive", "sentiserve", "sentiserve, grouping off", "triton (v2)", "sentiserve (v2)")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory, summed over ``pid`` and its descendants."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for member in descendants(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] += int(rest.split()[0]) / 1024
    return values


class Peer:
    """A server process on free ports; ``ready_s`` is start to ready."""

    def __init__(self, command: list[str]) -> None:
        self.http = free_port()
        self.metrics = free_port()
        cmd = [
            c.replace("{http}", str(self.http)).replace("{metrics}", str(self.metrics))
            for c in command
        ]
        start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.url = f"http://127.0.0.1:{self.http}"
        while True:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"{cmd[:3]} exited: {error[-2000:]}")
            if is_ready(self.url):
                break
            if time.monotonic() - start > 300:
                self.proc.kill()
                raise RuntimeError(f"{cmd[:3]} not ready in 300 s")
            time.sleep(0.02)
        self.ready_s = time.monotonic() - start

    def stop(self) -> dict[str, float]:
        memory = rss_mb(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return memory


def sentiserve_cmd(repo: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentiserve",
        "serve",
        "--model-repository",
        str(repo),
        "--http-port",
        "{http}",
        "--grpc-port",
        "0",
        "--metrics-port",
        "{metrics}",
        *extra,
    ]


def triton_cmd(repo: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentiserve",
        "triton",
        "--model-repository",
        str(repo),
        "--http-port",
        "{http}",
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        "{metrics}",
        "--exit-timeout",
        "3",
    ]


@dataclass(frozen=True)
class PeerSpec:
    name: str
    command: list[str]
    levels: tuple[int, ...]
    metrics: bool
    protocol: str = "v1"


def measure(
    peer: Peer, texts: BenchTexts, spec: PeerSpec, args: argparse.Namespace
) -> list[dict[str, Any]]:
    config = BenchConfig(
        url=peer.url,
        concurrency=spec.levels,
        duration_s=args.duration,
        warmup_s=args.warmup,
        metrics_url=f"http://127.0.0.1:{peer.metrics}/metrics" if spec.metrics else None,
        protocol=spec.protocol,
    )
    return asyncio.run(run_levels(config, texts)).results


def ceiling(repo: Path, texts: BenchTexts) -> dict[str, float]:
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.runtime import open_model

    model = open_model(ModelRepository(repo).load("sentiment"))
    encoded = model.tokenizer.encode(list(texts.texts))
    latencies = []
    for ids in encoded[:300]:
        batch = model.tokenizer.pad([ids])
        start = time.perf_counter()
        model.engine.infer(batch.input_ids, batch.attention_mask)
        latencies.append(time.perf_counter() - start)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        for s in range(0, len(order), 32):
            batch = model.tokenizer.pad([encoded[i] for i in order[s : s + 32]])
            model.engine.infer(batch.input_ids, batch.attention_mask)
        rates.append(len(order) / (time.perf_counter() - start))
    return {
        "batch1_p50_ms": statistics.median(latencies) * 1000,
        "sorted32_seq_s": max(rates),
        "mean_tokens": statistics.fmean(len(e) for e in encoded),
        "texts": len(encoded),
    }


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    repo, model_dir = Path(args.model_repository), Path(args.build_dir) / "model"
    out: dict[str, Any] = {}
    for data in args.data.split(","):
        texts = load_texts(data)
        section: dict[str, Any] = {"description": texts.description, "synthetic": texts.synthetic}
        print(f"[{data}] ceiling", file=sys.stderr)
        section["ceiling"] = ceiling(repo, texts)
        naive = [
            sys.executable,
            str(HERE / "naive_server.py"),
            "--model",
            str(model_dir),
            "--port",
            "{http}",
        ]
        peers = [
            PeerSpec("naive", naive, (1, 8, 32), False),
            PeerSpec("sentiserve", sentiserve_cmd(repo), (1, 8, 32, 64), True),
        ]
        if data == "long":
            off = sentiserve_cmd(repo, "--no-group-by-length")
            peers.append(PeerSpec("sentiserve, grouping off", off, (1, 8, 32, 64), True))
        if not args.no_triton:
            peers += [
                PeerSpec("triton (v2)", triton_cmd(repo), (1, 8, 32), True, "v2-http"),
                PeerSpec("sentiserve (v2)", sentiserve_cmd(repo), (1, 8, 32), True, "v2-http"),
            ]
        for spec in peers:
            print(f"[{data}] {spec.name}", file=sys.stderr)
            peer = Peer(spec.command)
            rows = measure(peer, texts, spec, args)
            memory = peer.stop()
            section[spec.name] = {
                "ready_s": peer.ready_s,
                "memory_mb": memory,
                "results": rows,
                "protocol": spec.protocol,
            }
        out[data] = section
    return out


def versions() -> dict[str, str]:
    import aiohttp
    import fastapi
    import onnxruntime
    import torch
    import transformers
    import uvicorn

    import sentiserve

    return {
        "python": platform.python_version(),
        "sentiserve": sentiserve.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "aiohttp": aiohttp.__version__,
    }


def row_at(section: dict[str, Any], peer: str, clients: int) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = section.get(peer, {}).get("results", [])
    return next((row for row in rows if row["concurrency"] == clients), None)


def finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def span(values: list[float], digits: int = 1) -> str:
    """``12.3`` or ``12.3–14.1`` over runs; ``-`` when nothing was measured."""
    values = finite(values)
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if round(lo, digits) == round(hi, digits):
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def goals(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, measured per run, target, met in every run)."""
    out: list[tuple[str, str, str, bool | None]] = []

    def ratio(name: str, target: float, fn: Any, higher: bool = True, fmt: str = "{:.2f}") -> None:
        values = finite([fn(run) for run in runs])
        if not values:
            out.append((name, "not measured", f"{'≥' if higher else '≤'} {target:g}", None))
            return
        met = all(v >= target if higher else v <= target for v in values)
        out.append(
            (
                name,
                " / ".join(fmt.format(v) for v in values),
                f"{'≥' if higher else '≤'} {target:g}",
                met,
            )
        )

    def at(run: dict[str, Any], data: str, peer: str, c: int, key: str) -> float | None:
        if data not in run:
            return None
        row = row_at(run[data], peer, c)
        return None if row is None else row[key]

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    def minus(a: float | None, b: float) -> float | None:
        return None if a is None else a - b

    ratio(
        "rt, 32 clients: sentiserve throughput / ceiling",
        0.85,
        lambda r: div(
            at(r, "rt", "sentiserve", 32, "throughput"), r["rt"]["ceiling"]["sorted32_seq_s"]
        ),
    )
    ratio(
        "rt, 32 clients: sentiserve / naive throughput",
        6.0,
        lambda r: div(
            at(r, "rt", "sentiserve", 32, "throughput"), at(r, "rt", "naive", 32, "throughput")
        ),
    )
    ratio(
        "rt, 32 clients: sentiserve p99 / naive p99",
        1.0,
        lambda r: div(at(r, "rt", "sentiserve", 32, "p99_ms"), at(r, "rt", "naive", 32, "p99_ms")),
        higher=False,
    )
    ratio(
        "rt, 1 client: p50 − engine batch-1 p50 (ms)",
        1.5,
        lambda r: minus(
            at(r, "rt", "sentiserve", 1, "p50_ms"), r["rt"]["ceiling"]["batch1_p50_ms"]
        ),
        higher=False,
    )
    ratio(
        "long, 32 clients: grouping on / off throughput",
        1.3,
        lambda r: div(
            at(r, "long", "sentiserve", 32, "throughput"),
            at(r, "long", "sentiserve, grouping off", 32, "throughput"),
        ),
    )
    ratio(
        "sentiserve ready after start (s)",
        2.0,
        lambda r: r.get("rt", {}).get("sentiserve", {}).get("ready_s"),
        higher=False,
    )
    ratio(
        "sentiserve resident memory, peak (MB)",
        400,
        lambda r: r.get("rt", {}).get("sentiserve", {}).get("memory_mb", {}).get("VmHWM"),
        higher=False,
        fmt="{:.0f}",
    )
    ratio(
        "rt, 32 clients, v2 HTTP: sentiserve / Triton throughput",
        1.6,
        lambda r: div(
            at(r, "rt", "sentiserve (v2)", 32, "throughput"),
            at(r, "rt", "triton (v2)", 32, "throughput"),
        ),
    )
    ratio(
        "rt, 32 clients, v2 HTTP: sentiserve p99 / Triton p99",
        0.6,
        lambda r: div(
            at(r, "rt", "sentiserve (v2)", 32, "p99_ms"), at(r, "rt", "triton (v2)", 32, "p99_ms")
        ),
        higher=False,
    )
    return out


def markdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    info = machine()
    lines = [
        "# Serving benchmark: sentiserve side by side with its peers",
        "",
        "Written by `python benchmarks/compare.py` (`make bench`). One machine, one client "
        "(`sentiserve bench`'s aiohttp closed loop, one text per request, "
        f"{args.warmup:g} s warm-up excluded, {args.duration:g} s per level), the same texts. "
        f"{len(runs)} full runs; cells show run 1 / run 2 … where they differ, as a range. "
        "The machine is shared and noisy: compare ratios within a run.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "- Client and servers share the cores (no other load).",
        "",
        "## Goals",
        "",
        "| goal | measured (per run) | target | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, measured, target, met in goals(runs):
        verdict = "n/a" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {target} | {verdict} |")
    for data in runs[0]:
        first = runs[0][data]
        lines += ["", f"## Data `{data}`: {first['description']}", ""]
        c = [r[data]["ceiling"] for r in runs]
        lines.append(
            f"Ceiling (no server, same engine, all {c[0]['texts']:,} texts, length-sorted "
            "batches of 32): "
            f"{span([x['sorted32_seq_s'] for x in c])} seq/s; engine batch-1 p50 "
            f"{span([x['batch1_p50_ms'] for x in c], 2)} ms; mean length "
            f"{c[0]['mean_tokens']:.0f} tokens."
        )
        lines += [
            "",
            "| server | clients | req/s | p50 ms | p99 ms | errors | batch | queue µs/req "
            "| compute µs/req |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for peer in PEERS:
            if peer not in first:
                continue
            for row in first[peer]["results"]:
                found = [row_at(r[data], peer, row["concurrency"]) for r in runs]
                rows = [x for x in found if x is not None]

                def cell(key: str, digits: int = 1, rows: list[dict[str, Any]] = rows) -> str:
                    vals = [x[key] for x in rows if x.get(key) is not None]
                    return span(vals, digits) if vals else "-"

                lines.append(
                    f"| {peer} | {row['concurrency']} | {cell('throughput')} | {cell('p50_ms')} | "
                    f"{cell('p99_ms')} | {cell('errors', 0)} | {cell('server_batch_size', 1)} | "
                    f"{cell('server_queue_us', 0)} | {cell('server_compute_us', 0)} |"
                )
        for peer in PEERS:
            if peer in first:
                ready = span([r[data][peer]["ready_s"] for r in runs], 2)
                peak = span([r[data][peer]["memory_mb"].get("VmHWM", 0) for r in runs], 0)
                lines.append(
                    f"\n{peer}: ready {ready} s after start; peak resident memory {peak} MB."
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--data", default="rt,long")
    parser.add_argument("--out", default=str(HERE / "RESULTS-serving.md"))
    parser.add_argument(
        "--no-triton", action="store_true", help="leave out Triton (and its sentiserve v2 pair)"
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="only re-write the report from a previous run's JSON (measures nothing)",
    )
    args = parser.parse_args()
    if args.render:
        runs = json.loads(Path(args.render).read_text())
        Path(args.out).write_text(markdown(runs, args))
        return
    if not (Path(args.build_dir) / "model" / "config.json").exists():
        sys.exit(f"no fine-tuned model in {args.build_dir}/model: run `make model` first")
    os.environ.setdefault("SENTISERVE_LOG_LEVEL", "WARNING")
    runs = []
    for k in range(args.repeat):
        print(f"run {k + 1} of {args.repeat}", file=sys.stderr)
        runs.append(one_run(args))
    out = Path(args.out)
    out.write_text(markdown(runs, args))
    out.with_suffix(".json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
