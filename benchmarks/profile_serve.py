"""Where the server's time goes at 32 clients: per-thread CPU and a py-spy profile.

Starts ``sentiserve serve`` (its defaults) on the model repository, loads it with wrk (32
connections, rt held-out texts, one text per request) and, during the measured window,
reads every server thread's CPU time from /proc and samples the process with py-spy
in a second window of the same load (Python frames, without pausing the process: a
thread inside ONNX Runtime shows as ``Session.run``; idle threads are left out). Writes
benchmarks/RESULTS-profile.md: throughput, CPU per thread (as cores and per request),
the process's CPU by component (ONNX Runtime, tokenizer, HTTP edge, event loop, batching),
and the hottest Python frames.

Usage: python benchmarks/profile_serve.py [--model-repository DIR] [--seconds 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")

# Leaf-frame substrings -> component, first match wins (py-spy's collapsed stacks name
# native frames by symbol and Python frames as "function (file:line)").
COMPONENTS = [
    ("ONNX Runtime", ("onnxruntime", "libonnxruntime", "MlasGemm", "Mlas", "InferenceSession")),
    ("tokenizer", ("tokenizers", "encode_batch", "tokenizer")),
    ("HTTP edge / JSON", ("httptools", "uvicorn", "json", "edge.py", "app.py", "pydantic")),
    ("batching / queues", ("batcher.py", "instances.py", "queue", "plane.py", "dataplane.py")),
    ("event loop / sockets", ("uvloop", "asyncio", "epoll", "socket", "send", "recv")),
    ("metrics", ("prometheus", "metrics.py")),
]


def thread_cpu(pid: int) -> dict[str, float]:
    """Seconds of CPU per thread: the main thread (the event loop) by name, the others
    (engine workers, ONNX Runtime's pool, gRPC, uvicorn) by thread id and OS name."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        label = "main (event loop)" if task.name == str(pid) else f"{name} {task.name}"
        out[label] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def component(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, keys in COMPONENTS:
            if any(k in frame for k in keys):
                return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-profile.md")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: `make setup` installs it (the dev extra)")

    from sentiserve.bench.texts import rt_texts
    from sentiserve.bench.wrk import run_wrk
    from sentiserve.local.ready import free_port, serve_command

    port, grpc, metrics = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        serve_command(args.model_repository, port, grpc, metrics),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        from sentiserve.local.ready import is_ready, wait_until

        if not wait_until(lambda: is_ready(url), 60):
            raise SystemExit("the server did not become ready")
        texts = rt_texts().texts
        run_wrk(url, "v1", texts, [args.clients], duration_s=5, warmup_s=0)  # warm
        # Window 1: per-thread CPU under load, nothing else attached.
        before = thread_cpu(server.pid)
        wall = time.perf_counter()
        result = run_wrk(url, "v1", texts, [args.clients], duration_s=args.seconds, warmup_s=0)
        wall = time.perf_counter() - wall
        after = thread_cpu(server.pid)
        # Window 2: py-spy samples the same load (without pausing the process).
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            sampler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(args.seconds),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            run_wrk(url, "v1", texts, [args.clients], duration_s=args.seconds + 2, warmup_s=0)
            sampler.wait(timeout=120)
            stacks = collections.Counter[str]()
            if raw.exists():
                for line in raw.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if count.isdigit():
                        stacks[stack] += int(count)
    finally:
        server.terminate()
        server.wait(timeout=30)

    wrk = result[0]
    requests = wrk.requests
    rate = wrk.throughput
    cpu = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    total = sum(cpu.values())
    busy = dict(stacks)  # py-spy leaves idle threads out without --idle
    by_component = collections.Counter[str]()
    for stack, n in busy.items():
        by_component[component(stack)] += n
    leaves = collections.Counter[str]()
    for stack, n in busy.items():
        python = [f for f in stack.split(";") if ".py:" in f]
        leaves[python[-1] if python else stack.split(";")[-1]] += n
    samples = sum(busy.values()) or 1

    import onnxruntime

    lines = [
        "# Where the server's time goes (`benchmarks/profile_serve.py`)",
        "",
        f"`sentiserve serve` (defaults) on {args.model_repository}, wrk with {args.clients} "
        f"connections, rt held-out texts, one text per request, {args.seconds} s measured. "
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores shared with wrk; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}.",
        "",
        f"- Throughput {rate:.0f} req/s ({requests} requests), p99 {wrk.p99_ms:.1f} ms.",
        f"- Server CPU {total / wall:.2f} cores over {wall:.1f} s: "
        f"{1e6 * total / max(requests, 1):.0f} µs of CPU per request.",
        "",
        "## CPU per thread (from /proc)",
        "",
        "| thread | cores | µs per request |",
        "| --- | ---: | ---: |",
    ]
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        if seconds > 0.01:
            lines.append(
                f"| {name} | {seconds / wall:.2f} | {1e6 * seconds / max(requests, 1):.0f} |"
            )
    lines += [
        "",
        "## Busy samples by component (py-spy, second window)",
        "",
        "| component | share of busy samples |",
        "| --- | ---: |",
    ]
    for name, n in by_component.most_common():
        lines.append(f"| {name} | {100 * n / samples:.1f}% |")
    lines += ["", "## Hottest Python frames (innermost Python frame of busy samples)", ""]
    lines += ["| frame | share |", "| --- | ---: |"]
    for frame, n in leaves.most_common(15):
        lines.append(f"| `{frame[:110]}` | {100 * n / samples:.1f}% |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
