"""Summaries of a benchmark: rows, a terminal table, JSON, CSV, a plot and an HTML page."""

from __future__ import annotations

import csv
import html
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiserve.bench.loadgen import Sample
from sentiserve.bench.servermetrics import ServerView

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (the value at rank ceil(q/100 * n))."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(level: dict[str, Any], sample: Sample, server: ServerView | None) -> dict[str, Any]:
    """One row: ``level`` (concurrency or rate) plus throughput, percentiles and errors."""
    ordered = sorted(sample.latencies_s)
    row: dict[str, Any] = dict(level)
    row["requests"] = sample.ok
    row["throughput"] = sample.ok / sample.window_s if sample.window_s > 0 else 0.0
    for q in PERCENTILES:
        row[f"p{q}_ms"] = percentile(ordered, q) * 1000
    row["max_ms"] = ordered[-1] * 1000 if ordered else math.nan
    row["errors"] = sum(sample.errors.values())
    row["errors_by_kind"] = dict(sorted(sample.errors.items()))
    row.update(server.as_dict() if server else ServerView(0, None, None, None).as_dict())
    return row


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class BenchReport:
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"results": self.results, "settings": self.settings, "machine": machine()}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def to_json(report: BenchReport) -> str:
    return json.dumps(_clean(report.as_dict()), separators=(",", ":"))


def level_name(level: dict[str, Any]) -> str:
    """``32 clients`` (closed loop) or ``rate 100/s`` (open loop)."""
    if "rate" in level:
        return f"rate {level['rate']:g}/s"
    count = level["concurrency"]
    return f"{count} client" if count == 1 else f"{count} clients"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(report: BenchReport) -> Any:
    from rich.table import Table

    settings = report.settings
    title = (
        f"{settings['protocol']} {settings['url']} model {settings['model']}, "
        f"data {settings['data']}"
    )
    out = Table(title=title, caption=settings.get("data_description"))
    for name in (
        "level",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "queue µs",
        "compute µs",
        "batch",
    ):
        out.add_column(name, justify="left" if name == "level" else "right")
    for row in report.results:
        errors = ", ".join(f"{k}: {v}" for k, v in row["errors_by_kind"].items()) or "0"
        out.add_row(
            level_name(row),
            _fmt(row["throughput"]),
            *(_fmt(row[f"p{q}_ms"], 2) for q in PERCENTILES),
            _fmt(row["max_ms"], 2),
            errors,
            _fmt(row["server_queue_us"], 0),
            _fmt(row["server_compute_us"], 0),
            _fmt(row["server_batch_size"], 2),
        )
    return out


CSV_COLUMNS = (
    "concurrency",
    "rate",
    "requests",
    "throughput",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "server_queue_us",
    "server_compute_us",
    "server_batch_size",
)


def write_outputs(report: BenchReport, out: Path) -> list[Path]:
    """JSON, CSV, PNG plot (latency percentiles against throughput) and an HTML page."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.csv", out / "bench.png", out / "bench.html"]
    paths[0].write_text(json.dumps(_clean(report.as_dict()), indent=2) + "\n")
    with paths[1].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in report.results:
            writer.writerow(
                [_clean(row.get(c)) if row.get(c) is not None else "" for c in CSV_COLUMNS]
            )
    plot(report, paths[2])
    paths[3].write_text(page(report, paths[2].name))
    return paths


def plot(report: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.results
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    x = [r["throughput"] for r in rows]
    for q, style in zip(PERCENTILES, ("o-", "s--", "^-.", "d:"), strict=True):
        ax.plot(x, [r[f"p{q}_ms"] for r in rows], style, label=f"p{q}")
    for r in rows:
        ax.annotate(
            level_name(r),
            (r["throughput"], r["p99_ms"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    settings = report.settings
    ax.set_title(f"{settings['protocol']} · {settings['model']} · data {settings['data']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def page(report: BenchReport, image: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("level", *CSV_COLUMNS[2:]))
    body = []
    for row in report.results:
        cells = [level_name(row)] + [_fmt(row.get(c), 2) for c in CSV_COLUMNS[2:]]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    settings = html.escape(json.dumps(report.settings, indent=2))
    info = html.escape(json.dumps(machine(), indent=2))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sentiserve bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>sentiserve bench</h1><img src='{html.escape(image)}' "
        "alt='latency against throughput'>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>"
        f"<h2>Settings</h2><pre>{settings}</pre><h2>Machine</h2><pre>{info}</pre></body></html>\n"
    )
