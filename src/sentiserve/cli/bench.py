"""``sentiserve bench``: measure an endpoint (ours or a Triton) under closed or open load."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import typer

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, emit_json, fail, user_errors


def parse_levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        fail(f"--concurrency {value!r}: expected comma-separated integers, e.g. 1,8,32", code=2)
    if not levels or any(level < 1 for level in levels):
        fail(f"--concurrency {value!r}: every level must be at least 1", code=2)
    return levels


def default_metrics_url(url: str) -> str:
    """Triton's layout: metrics on port 8002 of the same host."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or "127.0.0.1"
    return f"http://{host}:8002/metrics"


class _Ticker:
    """A progress bar per level, advanced by the clock (levels are bounded in time)."""

    def __init__(self, progress: object) -> None:
        self.progress = progress
        self.current: tuple[object, float, float] | None = None
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def start(self, name: str, seconds: float) -> None:
        self.finish()
        task = self.progress.add_task(name, total=seconds)  # type: ignore[attr-defined]
        self.current = (task, time.monotonic(), seconds)

    def finish(self) -> None:
        if self.current is not None:
            task, _, seconds = self.current
            self.progress.update(task, completed=seconds)  # type: ignore[attr-defined]
            self.current = None

    def _run(self) -> None:
        while not self.stop.wait(0.25):
            current = self.current
            if current is not None:
                task, started, seconds = current
                self.progress.update(task, completed=min(seconds, time.monotonic() - started))  # type: ignore[attr-defined]


def bench(
    url: str = typer.Option("http://127.0.0.1:8000", help="Server URL (HOST:PORT for gRPC)."),
    protocol: str = typer.Option(
        "v1", help="v1, v2-http, v2-grpc, or a drop-in route: tei (/predict), vllm (/v1/classify)."
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name."),
    concurrency: str = typer.Option("1,8,32,64", help="Closed-loop levels (clients)."),
    rate: float | None = typer.Option(None, help="Open loop: Poisson arrivals per second."),
    duration: float = typer.Option(10.0, "--duration-s", help="Seconds measured per level."),
    warmup: float = typer.Option(
        2.0, "--warmup-s", help="Seconds of unmeasured load before each level."
    ),
    timeout: float = typer.Option(30.0, "--timeout-s", help="Per-request client timeout."),
    data: str = typer.Option("rt", help="rt, long (synthetic), or a file (.txt/.csv/.jsonl)."),
    texts_per_request: int = typer.Option(
        1, min=1, help="Texts in each request (throughput is then requests x this in texts/s)."
    ),
    metrics_url: str | None = typer.Option(
        None, help="Server metrics page (default http://HOST:8002/metrics; 'none' to skip)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Path | None = typer.Option(None, help="Write bench.json, .csv, .png and .html here."),
) -> None:
    """Throughput, latency percentiles and errors per load level, plus the server's queue
    time, compute time and batch size from its metrics (perf_analyzer's columns)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from sentiserve.bench.protocols import PROTOCOLS
    from sentiserve.bench.report import table, to_json, write_outputs
    from sentiserve.bench.runner import BenchConfig, run
    from sentiserve.bench.texts import load_texts

    if protocol not in PROTOCOLS:
        fail(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}", code=2)
    levels = parse_levels(concurrency)
    if rate is not None and rate <= 0:
        fail("--rate must be positive", code=2)
    if duration <= 0 or warmup < 0 or timeout <= 0:
        fail("--duration-s and --timeout-s must be positive, --warmup-s not negative", code=2)
    metrics = None if metrics_url == "none" else (metrics_url or default_metrics_url(url))
    with user_errors():
        texts = load_texts(data, cache_dir=current_settings().cache_dir)
        config = BenchConfig(
            url=url,
            protocol=protocol,
            model=model,
            concurrency=levels,
            rate=rate,
            duration_s=duration,
            warmup_s=warmup,
            timeout_s=timeout,
            metrics_url=metrics,
            api_key=current_settings().api_key,
            texts_per_request=texts_per_request,
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            ticker = _Ticker(progress)
            try:
                report = run(config, texts, ticker.start)
            finally:
                ticker.finish()
                ticker.stop.set()
        if not json_output:
            from rich.console import Console

            wide = Console(stderr=True, highlight=False, width=max(console.width, 132))
            wide.print(table(report))
        if out is not None:
            for path in write_outputs(report, out):
                console.print(f"wrote {path}")
        if json_output:
            import json

            emit_json(json.loads(to_json(report)))
