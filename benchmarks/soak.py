"""Soak: hold 70% of the server's measured capacity for a long time and compare the start
with the end: resident memory, open file descriptors, threads and p99 latency.

1. Start ``sentiserve serve`` (its defaults) on free ports.
2. Measure capacity: wrk, 32 clients, 10 s (``--capacity-s``), rt texts.
3. Hold 70% of it with ``hey`` (a Go load generator; its ``-q`` rate limit makes the load
   open-loop-like at a fixed rate), one text per request, in segments of ``--segment``
   seconds; after each segment read the server's RSS, file descriptors and threads from
   /proc and the segment's p99 from hey.
4. Growth from the start (median of the first two segments) to the end (median of the last
   two) of more than 5% in RSS, descriptors or threads (or p99 more than 5% *and* 2 ms
   worse), or any error, is a defect: the script says so and exits 1.

Writes benchmarks/RESULTS-soak.md (``--out``). ``tests/integration/test_soak.py`` runs a
20-second version (5-second segments) with the same checks.

Usage: python benchmarks/soak.py [--minutes 30] [--segment 60] [--model-repository DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sentiserve.bench.report import machine
from sentiserve.bench.texts import load_texts
from sentiserve.bench.wrk import run_wrk
from sentiserve.local.ready import free_port, is_ready

HERE = Path(__file__).resolve().parent
LOAD_SHARE = 0.7
GROWTH_LIMIT = 0.05
P99_SLACK_MS = 2.0
"""p99 must grow by more than 5% *and* by more than this to count: at a few ms, 5% is
within one scheduler tick on a shared 2-core machine (``--p99-slack-ms``)."""
SOAK_TEXT = "An uneven film, but the performances are warm and the ending earns its tears."


@dataclass(frozen=True)
class Sample:
    minute: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rss_mb: float
    fds: int
    threads: int


def process_state(pid: int) -> tuple[float, int, int]:
    """Resident MB, open descriptors and threads of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def hey_segment(url: str, rate: float, seconds: int, clients: int) -> tuple[int, int, float, float]:
    """Requests, errors, p50 and p99 (ms) of one rate-limited hey run."""
    hey = shutil.which("hey")
    if hey is None:
        sys.exit("hey is not installed (Debian: apt-get install hey; `make system`)")
    body = json.dumps({"text": SOAK_TEXT})
    per_client = max(rate / clients, 0.1)
    done = subprocess.run(
        [
            hey,
            "-z",
            f"{seconds}s",
            "-c",
            str(clients),
            "-q",
            f"{per_client:.2f}",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-d",
            body,
            "-o",
            "csv",
            f"{url}/v1/sentiment",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hey failed: {done.stderr[-500:]}")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    latencies = sorted(float(r["response-time"]) * 1000 for r in rows)
    errors = sum(1 for r in rows if r["status-code"] != "200")
    if not latencies:
        return 0, 0, float("nan"), float("nan")

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return len(rows), errors, pct(0.5), pct(0.99)


def soak(
    repository: str,
    minutes: float,
    segment: int,
    data: str = "rt",
    clients: int = 16,
    p99_slack_ms: float = P99_SLACK_MS,
    capacity_s: int = 10,
) -> dict[str, object]:
    http, metrics = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "sentiserve",
        "serve",
        "--model-repository",
        repository,
        "--http-port",
        str(http),
        "--grpc-port",
        "0",
        "--metrics-port",
        str(metrics),
    ]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{http}"
        try:
            start = time.monotonic()
            while not is_ready(url):
                if server.poll() is not None or time.monotonic() - start > 120:
                    log.seek(0)
                    sys.exit(f"server did not start: {log.read()[-2000:]!r}")
                time.sleep(0.05)
            texts = load_texts(data).texts
            (capacity,) = run_wrk(url, "v1", texts, [32], duration_s=capacity_s, warmup_s=3)
            rate = LOAD_SHARE * capacity.throughput
            print(
                f"capacity {capacity.throughput:.0f} req/s; holding {rate:.0f} req/s "
                f"for {minutes:g} min",
                file=sys.stderr,
            )
            samples: list[Sample] = []
            began = time.monotonic()
            while time.monotonic() - began < minutes * 60:
                requests, errors, p50, p99 = hey_segment(url, rate, segment, clients)
                rss, fds, threads = process_state(server.pid)
                sample = Sample(
                    round((time.monotonic() - began) / 60, 2),
                    requests,
                    errors,
                    round(p50, 2),
                    round(p99, 2),
                    round(rss, 1),
                    fds,
                    threads,
                )
                samples.append(sample)
                print(json.dumps(asdict(sample)), file=sys.stderr)
        finally:
            server.terminate()
            server.wait(60)
    return {
        "capacity": capacity.throughput,
        "rate": rate,
        "minutes": minutes,
        "segment_s": segment,
        "p99_slack_ms": p99_slack_ms,
        "clients": clients,
        "samples": [asdict(s) for s in samples],
        "verdicts": verdicts(samples, p99_slack_ms),
    }


def verdicts(samples: list[Sample], p99_slack_ms: float = P99_SLACK_MS) -> list[dict[str, object]]:
    """Start against end, per resource: the medians of the first and of the last two
    segments (one segment is at the mercy of one noisy second on a shared machine)."""
    k = 2 if len(samples) >= 4 else 1
    out: list[dict[str, object]] = []
    for key in ("rss_mb", "fds", "threads", "p99_ms"):
        a = statistics.median(float(getattr(s, key)) for s in samples[:k])
        b = statistics.median(float(getattr(s, key)) for s in samples[-k:])
        growth = (b - a) / a if a else 0.0
        defect = growth > GROWTH_LIMIT and (key != "p99_ms" or b - a > p99_slack_ms)
        out.append({"what": key, "start": a, "end": b, "growth": growth, "ok": not defect})
    errors = sum(s.errors for s in samples)
    out.append({"what": "errors", "start": 0, "end": errors, "growth": 0.0, "ok": errors == 0})
    return out


def markdown(result: dict[str, object]) -> str:
    info = machine()
    lines = [
        "# Soak: 70% of capacity, start against end",
        "",
        "Written by `python benchmarks/soak.py`. `sentiserve serve` with its defaults and the "
        "default model; capacity measured with wrk (32 clients, 10 s, rt texts), then hey "
        f"holding {LOAD_SHARE:.0%} of it ({result['clients']} connections, rate-limited, one "
        f"text per request) in {result['segment_s']} s segments for {result['minutes']} "
        "minutes. Start = median of the first two segments, end = median of the last two. Growth "
        f"over 5% is a defect (p99 also needs {result.get('p99_slack_ms', P99_SLACK_MS)} ms).",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}",
        f"- Capacity {result['capacity']:.0f} req/s; held {result['rate']:.0f} req/s.",
        "",
        "| what | start | end | growth | ok |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for v in result["verdicts"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {v['what']} | {v['start']:g} | {v['end']:g} | {v['growth']:+.1%} | "
            f"{'yes' if v['ok'] else '**no**'} |"
        )
    lines += [
        "",
        "Every segment:",
        "",
        "| minute | requests | errors | p50 ms | p99 ms | RSS MB | fds | threads |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in result["samples"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {s['minute']} | {s['requests']} | {s['errors']} | {s['p50_ms']} | "
            f"{s['p99_ms']} | {s['rss_mb']} | {s['fds']} | {s['threads']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--segment", type=int, default=60, help="seconds per sample")
    parser.add_argument("--data", default="rt", help="texts for the capacity run (rt or a file)")
    parser.add_argument(
        "--capacity-s", type=int, default=10, help="seconds of the capacity run (after 3 s warm-up)"
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS-soak.md"))
    parser.add_argument(
        "--p99-slack-ms",
        type=float,
        default=P99_SLACK_MS,
        help="p99 growth below this many ms is noise, not a defect",
    )
    args = parser.parse_args()
    result = soak(
        args.model_repository,
        args.minutes,
        args.segment,
        args.data,
        p99_slack_ms=args.p99_slack_ms,
        capacity_s=args.capacity_s,
    )
    Path(args.out).write_text(markdown(result))
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    failed = [v["what"] for v in result["verdicts"] if not v["ok"]]  # type: ignore[attr-defined]
    if failed:
        sys.exit(f"soak: grew or failed: {', '.join(failed)} (see {args.out})")


if __name__ == "__main__":
    main()
