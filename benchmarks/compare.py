"""Serving side by side, in ONE run on one machine, with the same texts and clients.

Peers (each started, measured and stopped here):
1. plain: the server a user writes in an afternoon and the one to beat on CPU: FastAPI, a
   sync handler, one ONNX Runtime call per request on the same engine file
   (benchmarks/plain_server.py), with 1 and with 2 intra-op threads.
2. sentiserve: ``sentiserve serve`` with its defaults; on ``long`` also with length
   grouping off, to show what grouping is worth.
3. triton (v2): the real Triton 2.51 (bundled in nvidia-pytriton, ``sentiserve triton``)
   with the python-backend form of the same model version (same int8 engine, Triton's
   dynamic batching), over KServe v2 HTTP; beside it sentiserve (v2) over the same protocol.
4. naive: FastAPI + ``transformers.pipeline`` on the fine-tuned PyTorch model (rt only).
5. ceiling: no server, the same engine over the same texts in length-sorted batches of 32,
   in the better of two layouts: one session with every core, or one one-thread session
   per core side by side.

Headline numbers come from ``wrk`` (a C load generator: one thread, N keep-alive
connections, closed loop, one text per request), so the client does not eat the server's
cores; ``sentiserve bench`` (aiohttp, Python) is measured beside it for sentiserve and the
plain peers, with the server's own queue and compute metrics. Memory is the peak resident
set summed over a peer's processes (Triton's python stub included).
Writes benchmarks/RESULTS-serving.md (and the raw JSON beside it).

Usage: python benchmarks/compare.py [--model-repository DIR] [--build-dir DIR] [--repeat 2]
       [--duration 15] [--warmup 3] [--data rt,long] [--no-triton] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiserve.bench.report import machine
from sentiserve.bench.runner import BenchConfig, run_levels
from sentiserve.bench.texts import BenchTexts, load_texts
from sentiserve.bench.wrk import run_wrk
from sentiserve.engine.instances import available_cores
from sentiserve.local.ready import free_port, is_ready, serve_command

HERE = Path(__file__).resolve().parent
PLAIN = ("plain, 1 thread", "plain, 2 threads")
PEERS = (
    *PLAIN,
    "sentiserve",
    "sentiserve, grouping off",
    "naive",
    "triton (v2)",
    "sentiserve (v2)",
)
CLIENTS = ("wrk", "aiohttp")


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
    return serve_command(repo, "{http}", 0, "{metrics}", *extra)


def plain_cmd(repo: Path, threads: int) -> list[str]:
    return [
        sys.executable,
        str(HERE / "plain_server.py"),
        "--model-repository",
        str(repo),
        "--port",
        "{http}",
        "--threads",
        str(threads),
    ]


def triton_cmd(repo: Path) -> list[str]:
    return serve_command(
        repo, "{http}", free_port(), "{metrics}", "--exit-timeout-s", "3", command="triton"
    )


@dataclass(frozen=True)
class PeerSpec:
    name: str
    command: list[str]
    levels: tuple[int, ...]
    protocol: str = "v1"
    metrics: bool = False
    clients: tuple[str, ...] = ("wrk",)


def measure(
    peer: Peer, texts: BenchTexts, spec: PeerSpec, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if "wrk" in spec.clients:
        rows = run_wrk(
            peer.url,
            spec.protocol,
            texts.texts,
            spec.levels,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
        out["wrk"] = [r.as_dict() for r in rows]
    if "aiohttp" in spec.clients:
        config = BenchConfig(
            url=peer.url,
            concurrency=spec.levels,
            duration_s=args.duration,
            warmup_s=args.warmup,
            protocol=spec.protocol,
            metrics_url=f"http://127.0.0.1:{peer.metrics}/metrics" if spec.metrics else None,
        )
        out["aiohttp"] = [
            {**row, "client": "aiohttp"} for row in asyncio.run(run_levels(config, texts)).results
        ]
    return out


def sorted_batches(tokenizer: Any, encoded: list[list[int]], size: int = 32) -> list[Any]:
    """``encoded`` in length order, padded in batches of ``size`` (the ceiling's batches)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    return [
        tokenizer.pad([encoded[i] for i in order[s : s + size]]) for s in range(0, len(order), size)
    ]


def side_by_side_rate(engines: list[Any], batches: list[Any]) -> float:
    """Texts per second through ``engines`` side by side, each taking the next batch."""
    lock, position = threading.Lock(), [0]

    def work(engine: Any) -> None:
        while True:
            with lock:
                index = position[0]
                position[0] += 1
            if index >= len(batches):
                return
            engine.infer(batches[index].input_ids, batches[index].attention_mask)

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(len(b.input_ids) for b in batches) / (time.perf_counter() - start)


def ceiling(repo: Path, texts: BenchTexts) -> dict[str, float]:
    """The engine alone: batch-1 latency with every core, and length-sorted batches of 32
    through one session with every core or through one one-thread session per core."""
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    cores = available_cores()
    model = open_model(ModelRepository(repo).load("sentiment"), threads=cores)
    encoded = model.tokenizer.encode(list(texts.texts))
    latencies = []
    for ids in encoded[:300]:
        batch = model.tokenizer.pad([ids])
        start = time.perf_counter()
        model.engine.infer(batch.input_ids, batch.attention_mask)
        latencies.append(time.perf_counter() - start)
    batches = sorted_batches(model.tokenizer, encoded)
    one = max(side_by_side_rate([model.engine], batches) for _ in range(2))
    singles = [model.open_engine(1) for _ in range(cores)]
    per_core = max(side_by_side_rate(singles, batches) for _ in range(2))
    return {
        "batch1_p50_ms": statistics.median(latencies) * 1000,
        "one_session_seq_s": one,
        "per_core_seq_s": per_core,
        "sorted32_seq_s": max(one, per_core),
        "cores": cores,
        "mean_tokens": statistics.fmean(len(e) for e in encoded),
        "texts": len(encoded),
    }


def peer_specs(data: str, repo: Path, model_dir: Path, args: argparse.Namespace) -> list[PeerSpec]:
    both = ("wrk", "aiohttp")
    levels = (1, 32)
    specs = [
        PeerSpec(PLAIN[0], plain_cmd(repo, 1), levels, clients=both),
        PeerSpec(PLAIN[1], plain_cmd(repo, 2), levels, clients=both),
        PeerSpec("sentiserve", sentiserve_cmd(repo), levels, metrics=True, clients=both),
    ]
    if data == "long":
        off = sentiserve_cmd(repo, "--no-group-by-length")
        specs.append(PeerSpec("sentiserve, grouping off", off, (32,), metrics=True))
    if data == "rt":
        naive = [
            sys.executable,
            str(HERE / "naive_server.py"),
            "--model",
            str(model_dir),
            "--port",
            "{http}",
        ]
        specs.append(PeerSpec("naive", naive, levels))
        if not args.no_triton:
            specs += [
                PeerSpec("triton (v2)", triton_cmd(repo), levels, "v2-http"),
                PeerSpec("sentiserve (v2)", sentiserve_cmd(repo), levels, "v2-http"),
            ]
    return specs


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    repo, model_dir = Path(args.model_repository), Path(args.build_dir) / "model"
    out: dict[str, Any] = {}
    for data in args.data.split(","):
        texts = load_texts(data)
        section: dict[str, Any] = {"description": texts.description, "synthetic": texts.synthetic}
        print(f"[{data}] ceiling", file=sys.stderr)
        section["ceiling"] = ceiling(repo, texts)
        for spec in peer_specs(data, repo, model_dir, args):
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

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "sentiserve": sentiserve.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "aiohttp": aiohttp.__version__,
        "wrk": (wrk.stdout or wrk.stderr).split()[1] if (wrk.stdout or wrk.stderr) else "?",
    }


def row_at(
    section: dict[str, Any], peer: str, clients: int, client: str = "wrk"
) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = section.get(peer, {}).get("results", {}).get(client, [])
    return next((row for row in rows if row["concurrency"] == clients), None)


def finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def span(values: list[Any], digits: int = 1) -> str:
    """``12.3`` or ``12.3–14.1`` over runs; ``-`` when nothing was measured."""
    values = finite(values)
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if round(lo, digits) == round(hi, digits):
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f}–{hi:.{digits}f}"


def at(run: dict[str, Any], data: str, peer: str, clients: int, key: str) -> float | None:
    if data not in run:
        return None
    row = row_at(run[data], peer, clients)
    return None if row is None else row[key]


def best_plain(
    run: dict[str, Any], data: str, clients: int, key: str, higher: bool
) -> float | None:
    """The plain peer's best value (more throughput, or less latency) over its thread counts."""
    values = finite([at(run, data, p, clients, key) for p in PLAIN])
    if not values:
        return None
    return max(values) if higher else min(values)


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def goals(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, measured per run, target, met in every run)."""
    out: list[tuple[str, str, str, bool | None]] = []

    def goal(name: str, target: float, fn: Any, higher: bool = True, fmt: str = "{:.2f}") -> None:
        values = finite([fn(run) for run in runs])
        sign = "≥" if higher else "≤"
        if not values:
            out.append((name, "not measured", f"{sign} {target:g}", None))
            return
        met = all(v >= target if higher else v <= target for v in values)
        out.append((name, " / ".join(fmt.format(v) for v in values), f"{sign} {target:g}", met))

    def ceiling_of(run: dict[str, Any], data: str) -> float | None:
        return run.get(data, {}).get("ceiling", {}).get("sorted32_seq_s")

    goal(
        "rt, 32 clients: sentiserve / ceiling throughput",
        0.85,
        lambda r: div(at(r, "rt", "sentiserve", 32, "throughput"), ceiling_of(r, "rt")),
    )
    goal(
        "rt, 32 clients: sentiserve / best plain peer throughput",
        1.1,
        lambda r: div(
            at(r, "rt", "sentiserve", 32, "throughput"), best_plain(r, "rt", 32, "throughput", True)
        ),
    )
    goal(
        "rt, 32 clients: sentiserve p99 / best plain peer p99",
        0.8,
        lambda r: div(
            at(r, "rt", "sentiserve", 32, "p99_ms"), best_plain(r, "rt", 32, "p99_ms", False)
        ),
        higher=False,
    )
    goal(
        "rt, 1 client: sentiserve p50 − best plain peer p50 (ms)",
        0.3,
        lambda r: (
            None
            if at(r, "rt", "sentiserve", 1, "p50_ms") is None
            or best_plain(r, "rt", 1, "p50_ms", False) is None
            else at(r, "rt", "sentiserve", 1, "p50_ms") - best_plain(r, "rt", 1, "p50_ms", False)
        ),
        higher=False,
    )
    goal(
        "long, 32 clients: sentiserve / ceiling throughput",
        0.85,
        lambda r: div(at(r, "long", "sentiserve", 32, "throughput"), ceiling_of(r, "long")),
    )
    goal(
        "long, 32 clients: sentiserve / best plain peer throughput",
        1.0,
        lambda r: div(
            at(r, "long", "sentiserve", 32, "throughput"),
            best_plain(r, "long", 32, "throughput", True),
        ),
    )
    goal(
        "rt, 32 clients, v2 HTTP: sentiserve / Triton throughput",
        1.6,
        lambda r: div(
            at(r, "rt", "sentiserve (v2)", 32, "throughput"),
            at(r, "rt", "triton (v2)", 32, "throughput"),
        ),
    )
    goal(
        "rt, 32 clients, v2 HTTP: sentiserve p99 / Triton p99",
        0.6,
        lambda r: div(
            at(r, "rt", "sentiserve (v2)", 32, "p99_ms"), at(r, "rt", "triton (v2)", 32, "p99_ms")
        ),
        higher=False,
    )
    goal(
        "sentiserve ready after start (s)",
        2.0,
        lambda r: r.get("rt", {}).get("sentiserve", {}).get("ready_s"),
        higher=False,
    )
    for data in ("rt", "long"):
        goal(
            f"sentiserve peak resident memory, {data} (MB)",
            400,
            lambda r, d=data: r.get(d, {}).get("sentiserve", {}).get("memory_mb", {}).get("VmHWM"),
            higher=False,
            fmt="{:.0f}",
        )
    goal(
        "rt, 32 clients: sentiserve / naive throughput (for reference)",
        6.0,
        lambda r: div(
            at(r, "rt", "sentiserve", 32, "throughput"), at(r, "rt", "naive", 32, "throughput")
        ),
    )
    return out


def results_table(runs: list[dict[str, Any]], data: str, client: str) -> list[str]:
    first = runs[0][data]
    server = client == "aiohttp"
    head = "| server | clients | req/s | p50 ms | p99 ms | errors |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if server:
        head += " batch | queue µs/req | compute µs/req |"
        rule += " --- | --- | --- |"
    lines = [head, rule]
    for peer in PEERS:
        if peer not in first:
            continue
        for row in first[peer]["results"].get(client, []):
            found = [row_at(r[data], peer, row["concurrency"], client) for r in runs]
            rows = [x for x in found if x is not None]

            def cell(key: str, digits: int = 1, rows: list[dict[str, Any]] = rows) -> str:
                return span([x.get(key) for x in rows], digits)

            line = (
                f"| {peer} | {row['concurrency']} | {cell('throughput')} | "
                f"{cell('p50_ms', 2)} | {cell('p99_ms')} | {cell('errors', 0)} |"
            )
            if server:
                line += (
                    f" {cell('server_batch_size')} | {cell('server_queue_us', 0)} | "
                    f"{cell('server_compute_us', 0)} |"
                )
            lines.append(line)
    return lines


def markdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    info = machine()
    lines = [
        "# Serving benchmark: sentiserve side by side with its peers",
        "",
        "Written by `python benchmarks/compare.py` (`make bench`). One machine; the client "
        "shares its cores with the server. Headline numbers: `wrk` (C, one thread, N "
        "keep-alive connections, closed loop, one text per request, "
        f"{args.warmup:g} s warm-up thrown away, {args.duration:g} s per level); beside it "
        "`sentiserve bench` (aiohttp, Python) with the server's own queue and compute metrics. "
        f"{len(runs)} full runs; cells show the range over runs. The machine is shared and "
        "noisy: compare ratios within a run.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "- The plain peers: FastAPI, sync handler, one ONNX Runtime call per request on the "
        "same engine file (benchmarks/plain_server.py), 1 or 2 intra-op threads. "
        '"Best plain peer" is the better of the two in each run.',
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
        c = [r[data]["ceiling"] for r in runs]
        lines += ["", f"## Data `{data}`: {first['description']}", ""]
        lines.append(
            f"Ceiling (no server, the same engine, all {c[0]['texts']:,} texts in "
            f"length-sorted batches of 32): {span([x['sorted32_seq_s'] for x in c])} seq/s, "
            f"the better of one session with {c[0]['cores']} threads "
            f"({span([x['one_session_seq_s'] for x in c])}) and {c[0]['cores']} one-thread "
            f"sessions side by side ({span([x['per_core_seq_s'] for x in c])}). Engine "
            f"batch-1 p50 {span([x['batch1_p50_ms'] for x in c], 2)} ms with "
            f"{c[0]['cores']} threads; mean length {c[0]['mean_tokens']:.0f} tokens."
        )
        lines += ["", "wrk:", "", *results_table(runs, data, "wrk")]
        if any(first[p]["results"].get("aiohttp") for p in PEERS if p in first):
            lines += [
                "",
                "`sentiserve bench` (aiohttp):",
                "",
                *results_table(runs, data, "aiohttp"),
            ]
        lines.append("")
        for peer in PEERS:
            if peer in first:
                ready = span([r[data][peer]["ready_s"] for r in runs], 2)
                peak = span([r[data][peer]["memory_mb"].get("VmHWM", 0) for r in runs], 0)
                lines.append(f"- {peer}: ready {ready} s after start; peak resident {peak} MB.")
    return "\n".join(lines) + "\n"


SECTION = re.compile(r"<!-- (\w+):start -->.*?<!-- \1:end -->", re.S)
"""A section another script writes into the report (benchmarks/compat.py's)."""


def keep_sections(path: Path, text: str) -> str:
    """``text`` followed by the marked sections of the report at ``path``, which other
    scripts measured and this run did not."""
    old = path.read_text() if path.exists() else ""
    kept = [m.group(0) for m in SECTION.finditer(old)]
    return "\n\n".join([text.rstrip(), *kept]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
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
    out.write_text(keep_sections(out, markdown(runs, args)))
    out.with_suffix(".json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
