"""The images `make images` builds, measured here: each image's size, the time from `docker
run` to ready (the CPU serving image, and the CPU Triton stand-in, both on the default model
repository mounted read-only, run read-only and non-root), and how long `docker stop` (SIGTERM)
takes with requests in flight, and whether any failed.

Writes its section of benchmarks/RESULTS-image.md (between the ``containers`` markers).

Usage (root; starts the project's private daemon if none answers):
    python benchmarks/containers.py [--model-repository DIR] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOCKER = "/usr/bin/docker"
START, END = "<!-- containers:start -->", "<!-- containers:end -->"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=check)


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "(.+)"', text, re.M)
    assert match is not None
    return match.group(1)


def ready_after(name: str, url: str, start: float, limit_s: float = 180) -> float:
    while time.monotonic() - start < limit_s:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    logs = docker("logs", name, check=False).stderr[-1500:]
    raise RuntimeError(f"{name} not ready in {limit_s} s: {logs}")


SERVING = [
    "--network", "host", "--read-only", "--tmpfs", "/tmp:uid=10001,gid=10001",
    "--tmpfs", "/cache:uid=10001,gid=10001", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
]  # fmt: skip


def serving_run(image: str, repo: Path) -> tuple[float, float, int, list[int | str]]:
    """(ready s, docker stop s, requests sent before SIGTERM, the failed ones' answers)."""
    name = "sentiserve-bench-cpu"
    docker("rm", "--force", name, check=False)
    start = time.monotonic()
    docker("run", "--detach", "--name", name, *SERVING, "-v", f"{repo}:/models:ro", image)
    ready = ready_after(name, "http://127.0.0.1:8000/v2/health/ready", start)
    texts = [f"review number {i}: a fine, moving and funny film" for i in range(64)]
    codes: list[int | str] = []

    def client() -> None:
        try:
            r = httpx.post("http://127.0.0.1:8000/v1/sentiment", json={"texts": texts}, timeout=60)
            codes.append(r.status_code)
        except httpx.HTTPError as exc:
            codes.append(type(exc).__name__)

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    stop_start = time.monotonic()
    docker("stop", "--time", "45", name)
    stopped = time.monotonic() - stop_start
    for thread in threads:
        thread.join(60)
    docker("rm", "--force", name, check=False)
    return ready, stopped, len(threads), [c for c in codes if c != 200]


def triton_ready(image: str, repo: Path) -> float:
    name = "sentiserve-bench-triton"
    docker("rm", "--force", name, check=False)
    start = time.monotonic()
    docker(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--tmpfs", "/tmp:mode=1777", "--shm-size", "256m", "-v", f"{repo}:/models:ro", image,
        "tritonserver", "--model-repository=/models", "--strict-readiness=true",
        "--model-control-mode=none", "--http-port=18000", "--grpc-port=18001",
        "--metrics-port=18002",
    )  # fmt: skip
    try:
        return ready_after(name, "http://127.0.0.1:18000/v2/health/ready", start)
    finally:
        docker("rm", "--force", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-image.md")
    args = parser.parse_args()
    started = None
    if not os.environ.get("DOCKER_HOST") or docker("version", check=False).returncode:
        started = subprocess.run(
            [str(ROOT / "deploy/docker/engine.sh"), "start"],
            capture_output=True,
            text=True,
            check=True,
        )
        os.environ["DOCKER_HOST"] = started.stdout.strip()
    try:
        v = version()
        images = {
            "sentiserve-base:bookworm": "local Debian bookworm base (mmdebstrap)",
            f"sentiserve:{v}": "CPU serving image",
            f"sentiserve-score:{v}": "batch-scoring image (RayJob)",
            f"sentiserve-triton:cpu-{v}": "Dockerfile.triton on the CPU Triton stand-in",
        }
        sizes = {}
        for image in images:
            info = json.loads(docker("image", "inspect", image).stdout)[0]
            sizes[image] = info["Size"] / 1e6
        repo = args.model_repository.resolve()
        runs = [serving_run(f"sentiserve:{v}", repo) for _ in range(args.runs)]
        tritons = [triton_ready(f"sentiserve-triton:cpu-{v}", repo) for _ in range(args.runs)]
        engine = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    finally:
        if started is not None:
            subprocess.run([str(ROOT / "deploy/docker/engine.sh"), "stop"], check=False)

    def span(values: list[float], digits: int = 2) -> str:
        each = ", ".join(f"{x:.{digits}f}" for x in values)
        return f"{statistics.median(values):.{digits}f} (runs: {each})"

    lines = [
        START,
        "## The images, built and run (benchmarks/containers.py)",
        "",
        f"`python benchmarks/containers.py` ({time.strftime('%Y-%m-%d')}, Docker {engine}, "
        f"{os.cpu_count()} cores; images from `make images`; model: {repo.name}, "
        "mounted read-only; containers read-only, non-root, all capabilities dropped).",
        "",
        "| image | what | size |",
        "| --- | --- | ---: |",
        *[f"| `{i}` | {what} | {sizes[i]:.0f} MB |" for i, what in images.items()],
        "",
        f"- CPU serving image, `docker run` to ready: {span([r[0] for r in runs])} s.",
        f"- `docker stop` (SIGTERM, 45 s allowed) with {runs[0][2]} requests of 64 texts in "
        f"flight: {span([r[1] for r in runs])} s; failed requests: "
        f"{'; '.join(', '.join(map(str, r[3])) or 'none' for r in runs)} (a 503 is a request "
        "the server had not started when SIGTERM came: refused as draining, with Retry-After; "
        "on Kubernetes the preStop sleep takes the pod out of its Service first).",
        f"- CPU Triton stand-in, `docker run` to ready (python form): {span(tritons)} s.",
        f"- Target: the CPU serving image ≤ 400 MB. Measured {sizes[f'sentiserve:{v}']:.0f} MB "
        "on the local base (no manuals, translations or perl; the environment copied into "
        "the runtime stage without pip, trimmed by deploy/docker/slim.sh: no hub client, no "
        "test suites, botocore's models for S3/STS/SSO only, extension modules stripped).",
        "",
        END,
    ]
    text = "\n".join(lines)
    old = args.out.read_text() if args.out.exists() else ""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(old):
        args.out.write_text(pattern.sub(lambda _m: text, old))
    else:
        args.out.write_text(f"{old.rstrip()}\n\n{text}\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
