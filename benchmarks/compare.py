"""Serving side by side, in ONE run on one machine, with the same texts and clients.

Peers (each started, measured and stopped here, all on the same int8 engine file):
1. plain: the server a user writes in an afternoon: FastAPI, a sync handler, one ONNX
   Runtime call per request (benchmarks/plain_server.py), with 1 and with 2 intra-op threads.
2. the serving frameworks people pick for dynamic batching, each from its own environment
   (benchmarks/peerset.py, benchmarks/peers/): LitServe, Ray Serve, BentoML, MLServer
   (KServe v2) and Infinity, each with the best of the settings its documentation suggests
   (measured first, at 32 clients).
3. sentiserve: ``sentiserve serve`` with its defaults; at 32 clients and more also with
   ``--batch-window 8`` (the tail-latency setting); on ``long`` also with length grouping
   off, to show what grouping is worth.
4. triton (v2): the real Triton 2.51 (bundled in nvidia-pytriton, ``sentiserve triton``)
   with the python-backend form of the same model version (Triton's dynamic batching), over
   KServe v2 HTTP; beside it sentiserve (v2) over the same protocol.
5. naive: FastAPI + ``transformers.pipeline`` on the fine-tuned PyTorch model (rt only).
6. ceiling: no server, the same engine over the same texts in length-sorted batches of 32,
   in the better of two layouts: one session with every core, or one one-thread session
   per core side by side.

Each server is measured at 1, 8, 32, 128 and 256 concurrent clients. Headline numbers come
from ``wrk`` (a C load generator: one thread, N keep-alive connections, closed loop, one
text per request), so the client does not eat the server's cores; ``sentiserve bench``
(aiohttp, Python) is measured beside it for sentiserve and the plain peers, with the
server's own queue and compute metrics, and over KServe v2 gRPC (grpc.aio; wrk speaks
only HTTP/1.1) for sentiserve and Triton at 1 and 32 clients. A server is ready when it
first answers a real request. Memory is the peak resident set summed over a server's
processes (Triton's python stub, Ray's GCS and raylet, every worker).
Writes benchmarks/RESULTS-serving.md, its JSON and a plot (RESULTS-serving.png) beside it.

Usage: python benchmarks/compare.py [--model-repository DIR] [--build-dir DIR] [--repeat 2]
       [--duration 10] [--warmup 2] [--data rt,long] [--levels 1,8,32,128,256]
       [--no-triton] [--no-frameworks] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peerset
import serving_report
from peerset import Request, protocol_request
from sentiserve.bench.report import machine
from sentiserve.bench.runner import BenchConfig, run_levels
from sentiserve.bench.texts import BenchTexts, load_texts
from sentiserve.bench.wrk import run_wrk_bodies
from sentiserve.engine.instances import available_cores
from sentiserve.local.ready import free_port, serve_command
from serving_report import PLAIN

HERE = Path(__file__).resolve().parent
LEVELS = (1, 8, 32, 128, 256)
TUNE_CLIENTS = 32


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


def answers(url: str, body: bytes) -> bool:
    """Whether a POST of ``body`` to ``url`` gets a 200."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


class Peer:
    """A server process (and its process group) on free ports; ready when it first answers
    ``probe`` (a path and one request body) with 200; ``ready_s`` is start to ready."""

    def __init__(
        self, command: list[str], probe: tuple[str, bytes], env: dict[str, str] | None = None
    ) -> None:
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        ports = {"{http}": self.http, "{grpc}": self.grpc, "{metrics}": self.metrics}
        cmd = []
        for part in command:
            for name, port in ports.items():
                part = part.replace(name, str(port))
            cmd.append(part)
        start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.http}"
        while True:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"{' '.join(cmd[:3])} exited: {error[-2000:]}")
            if answers(self.url + probe[0], probe[1]):
                break
            if time.monotonic() - start > 300:
                self.stop()
                raise RuntimeError(f"{' '.join(cmd[:3])} did not answer in 300 s")
            time.sleep(0.05)
        self.ready_s = time.monotonic() - start
        # Nothing reads stderr from here on: a chatty server must not block on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]

    def stop(self) -> dict[str, float]:
        memory = rss_mb(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        # Whatever the server left behind in its session (Ray's daemons, workers).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return memory


def sentiserve_cmd(repo: Path, *extra: str, grpc: bool = False) -> list[str]:
    return serve_command(repo, "{http}", "{grpc}" if grpc else 0, "{metrics}", *extra)


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
        repo, "{http}", "{grpc}", "{metrics}", "--exit-timeout-s", "3", command="triton"
    )


@dataclass(frozen=True)
class PeerSpec:
    name: str
    command: list[str]
    levels: tuple[int, ...]
    protocol: str = "v1"
    request: Request = field(default=protocol_request("v1"))
    metrics: bool = False
    clients: tuple[str, ...] = ("wrk",)
    env: dict[str, str] | None = None
    settings: dict[str, Any] | None = None


def framework_spec(
    framework: peerset.Framework, setting: dict[str, Any], repo: Path, levels: tuple[int, ...]
) -> PeerSpec:
    command, env = framework.command(repo, setting)
    return PeerSpec(
        framework.name,
        command,
        levels,
        protocol=framework.protocol,
        request=framework.request,
        env=env,
        settings=setting,
    )


def start(spec: PeerSpec, texts: BenchTexts) -> Peer:
    path, bodies = spec.request(texts.texts[:1])
    return Peer(spec.command, (path, bodies[0]), spec.env)


def measure(
    peer: Peer, texts: BenchTexts, spec: PeerSpec, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if "wrk" in spec.clients:
        path, bodies = spec.request(texts.texts)
        rows = run_wrk_bodies(
            peer.url + path,
            bodies,
            spec.levels,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
        out["wrk"] = [r.as_dict() for r in rows]
    if "bench" in spec.clients:
        grpc = spec.protocol == "v2-grpc"
        config = BenchConfig(
            url=f"127.0.0.1:{peer.grpc}" if grpc else peer.url,
            concurrency=tuple(n for n in spec.levels if n in (1, 32)),
            duration_s=args.duration,
            warmup_s=args.warmup,
            protocol=spec.protocol,
            metrics_url=f"http://127.0.0.1:{peer.metrics}/metrics" if spec.metrics else None,
        )
        client = "sentiserve bench (grpc.aio)" if grpc else "sentiserve bench (aiohttp)"
        out["bench"] = [
            {**row, "client": client} for row in asyncio.run(run_levels(config, texts)).results
        ]
    return out


def tune(repo: Path, texts: BenchTexts, args: argparse.Namespace) -> dict[str, Any]:
    """Each framework peer at ``TUNE_CLIENTS`` clients under each of its settings; the best
    is the most throughput without errors (or, if every setting failed some requests, the
    one with the fewest errors)."""
    out: dict[str, Any] = {}
    for framework in peerset.FRAMEWORKS:
        if not framework.installed():
            out[framework.name] = {"error": f"not installed (make bench-peers: {framework.venv})"}
            continue
        tried = []
        for setting in framework.settings:
            print(f"[tune] {framework.name}: {setting}", file=sys.stderr)
            spec = framework_spec(framework, setting, repo, (TUNE_CLIENTS,))
            try:
                peer = start(spec, texts)
            except RuntimeError as error:
                tried.append({"setting": setting, "error": str(error)[-500:]})
                continue
            try:
                path, bodies = spec.request(texts.texts)
                (row,) = run_wrk_bodies(
                    peer.url + path,
                    bodies,
                    (TUNE_CLIENTS,),
                    duration_s=args.tune_duration,
                    warmup_s=args.warmup,
                )
            finally:
                peer.stop()
            tried.append({"setting": setting, **row.as_dict()})
        ran = [t for t in tried if "error" not in t]
        if not ran:
            error = tried[-1]["error"] if tried else "no settings"
            if framework.known_issue:
                said = [line for line in error.splitlines() if line.strip()][-1:] or ["-"]
                error = f"{framework.known_issue} It said: {said[0].strip()}"
            out[framework.name] = {"error": error}
            continue
        best = max(ran, key=lambda t: (-t["errors"], t["throughput"]))
        out[framework.name] = {"tried": tried, "best": best["setting"]}
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

    return sum(len(b.input_ids) for b in batches) / on_threads(work, engines)


def on_threads(work: Callable[[Any], None], engines: Sequence[Any]) -> float:
    """``work(engine)`` for each of ``engines`` on a thread of its own; the seconds until
    every one has returned."""
    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def ceiling(repo: Path, texts: BenchTexts) -> dict[str, float]:
    """The engine alone: batch-1 latency with every core, and length-sorted batches of 32
    through one session with every core or one one-thread run per core side by side (a
    session each, or one shared session)."""
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
    # One-thread runs side by side: a session each, or one session shared by every thread
    # (as the server runs them); the better of the two.
    singles = [model.open_engine(1) for _ in range(cores)]
    shared = [model.open_engine(1)] * cores
    per_core = max(side_by_side_rate(e, batches) for e in (singles, shared, singles, shared))
    return {
        "batch1_p50_ms": statistics.median(latencies) * 1000,
        "one_session_seq_s": one,
        "per_core_seq_s": per_core,
        "sorted32_seq_s": max(one, per_core),
        "cores": cores,
        "mean_tokens": statistics.fmean(len(e) for e in encoded),
        "texts": len(encoded),
    }


def peer_specs(
    data: str,
    repo: Path,
    model_dir: Path,
    args: argparse.Namespace,
    tuned: dict[str, Any],
) -> list[PeerSpec]:
    both = ("wrk", "bench")
    levels = args.levels
    specs = [
        PeerSpec(PLAIN[0], plain_cmd(repo, 1), levels, clients=both),
        PeerSpec(PLAIN[1], plain_cmd(repo, 2), levels, clients=both),
        PeerSpec("sentiserve", sentiserve_cmd(repo), levels, metrics=True, clients=both),
    ]
    # The tail-latency setting (docs/serving.md) where the server is saturated.
    window = sentiserve_cmd(repo, "--batch-window", "8")
    busy = tuple(n for n in levels if n >= 32)
    specs.append(PeerSpec("sentiserve, window 8", window, busy))
    if data == "long":
        off = sentiserve_cmd(repo, "--no-group-by-length")
        specs.append(PeerSpec("sentiserve, grouping off", off, (32,), metrics=True))
    for framework in peerset.FRAMEWORKS:
        best = tuned.get(framework.name, {}).get("best")
        if best is not None:
            specs.append(framework_spec(framework, best, repo, levels))
    if data == "rt":
        naive = [
            sys.executable,
            str(HERE / "naive_server.py"),
            "--model",
            str(model_dir),
            "--port",
            "{http}",
        ]
        specs.append(PeerSpec("naive", naive, tuple(n for n in levels if n in (1, 32))))
        if not args.no_triton:
            v2 = protocol_request("v2-http")
            grpc = tuple(n for n in levels if n in (1, 32))
            specs += [
                PeerSpec("triton (v2)", triton_cmd(repo), levels, "v2-http", v2),
                PeerSpec("sentiserve (v2)", sentiserve_cmd(repo), levels, "v2-http", v2),
                # gRPC: sentiserve bench's grpc.aio client (wrk speaks HTTP/1.1 only).
                PeerSpec(
                    "triton (v2 gRPC)",
                    triton_cmd(repo),
                    grpc,
                    "v2-grpc",
                    v2,
                    metrics=True,
                    clients=("bench",),
                ),
                PeerSpec(
                    "sentiserve (v2 gRPC)",
                    sentiserve_cmd(repo, grpc=True),
                    grpc,
                    "v2-grpc",
                    v2,
                    metrics=True,
                    clients=("bench",),
                ),
            ]
    return specs


def one_run(args: argparse.Namespace, tuned: dict[str, Any]) -> dict[str, Any]:
    repo, model_dir = Path(args.model_repository), Path(args.build_dir) / "model"
    out: dict[str, Any] = {"tuning": tuned}
    for data in args.data.split(","):
        texts = load_texts(data)
        section: dict[str, Any] = {"description": texts.description, "synthetic": texts.synthetic}
        print(f"[{data}] ceiling", file=sys.stderr)
        section["ceiling"] = ceiling(repo, texts)
        for spec in peer_specs(data, repo, model_dir, args, tuned):
            print(f"[{data}] {spec.name}", file=sys.stderr)
            try:
                peer = start(spec, texts)
            except RuntimeError as error:
                section[spec.name] = {"error": str(error)[-1000:], "protocol": spec.protocol}
                continue
            try:
                rows = measure(peer, texts, spec, args)
            finally:
                memory = peer.stop()
            section[spec.name] = {
                "ready_s": peer.ready_s,
                "memory_mb": memory,
                "results": rows,
                "protocol": spec.protocol,
                "settings": spec.settings,
            }
        out[data] = section
    return out


def package_version(python: Path | str, package: str) -> str:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def versions() -> dict[str, str]:
    import aiohttp
    import fastapi
    import onnxruntime
    import torch
    import transformers
    import uvicorn

    import sentiserve

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    found = {
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
    for framework in peerset.FRAMEWORKS:
        if framework.installed():
            found[framework.package] = package_version(framework.python, framework.package)
    return found


SECTION = re.compile(r"<!-- (\w+):start -->.*?<!-- \1:end -->", re.S)
"""A section another script writes into the report (benchmarks/compat.py's)."""


def keep_sections(path: Path, text: str) -> str:
    """``text`` followed by the marked sections of the report at ``path``, which other
    scripts measured and this run did not."""
    old = path.read_text() if path.exists() else ""
    kept = [m.group(0) for m in SECTION.finditer(old)]
    return "\n\n".join([text.rstrip(), *kept]) + "\n"


def report(runs: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    """RESULTS-serving.md (keeping other scripts' sections) and the plot beside it."""
    picture = out.with_suffix(".png")
    serving_report.plot(runs, picture)
    text = serving_report.markdown(
        runs,
        info=runs[0]["meta"]["machine"],
        versions=runs[0]["meta"]["versions"],
        duration_s=args.duration,
        warmup_s=args.warmup,
        plot_name=picture.name,
    )
    out.write_text(keep_sections(out, text))


def levels(value: str) -> tuple[int, ...]:
    try:
        found = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,32, got {value!r}") from None
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError("client counts must be 1 or more")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds thrown away first")
    parser.add_argument("--tune-duration", type=float, default=8.0, help="seconds per setting")
    parser.add_argument("--levels", type=levels, default=LEVELS, help="concurrent clients")
    parser.add_argument("--data", default="rt,long")
    parser.add_argument("--out", default=str(HERE / "RESULTS-serving.md"))
    parser.add_argument(
        "--no-triton", action="store_true", help="leave out Triton (and its sentiserve v2 pair)"
    )
    parser.add_argument(
        "--no-frameworks",
        action="store_true",
        help="leave out LitServe, Ray Serve, BentoML, MLServer and Infinity",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="only re-write the report from a previous run's JSON (measures nothing)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        report(json.loads(Path(args.render).read_text()), args, out)
        return
    if not (Path(args.build_dir) / "model" / "config.json").exists():
        sys.exit(f"no fine-tuned model in {args.build_dir}/model: run `make model` first")
    os.environ.setdefault("SENTISERVE_LOG_LEVEL", "WARNING")
    out.parent.mkdir(parents=True, exist_ok=True)
    repo = Path(args.model_repository)
    tuned: dict[str, Any] = {}
    if not args.no_frameworks:
        tuned = tune(repo, load_texts(args.data.split(",")[0]), args)
    meta = {"machine": machine(), "versions": versions()}
    runs = []
    for k in range(args.repeat):
        print(f"run {k + 1} of {args.repeat}", file=sys.stderr)
        runs.append({"meta": meta, **one_run(args, tuned)})
        # Written after every run, so a long measurement is never lost to a later failure.
        out.with_suffix(".json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
    report(runs, args, out)
    print(f"wrote {out}, its plot and {out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
