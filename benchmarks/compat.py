"""The drop-in routes cost what /v1/sentiment costs: one ``sentiserve serve`` (its
defaults), loaded with wrk at 32 clients, one text per request (the rt texts), through
``/v1/sentiment``, TEI's ``/predict`` and vLLM's ``/v1/classify`` in turn, several rounds
interleaved so that drift on a shared machine falls on every route alike. The target: each
drop-in route's throughput within 5% of /v1/sentiment's (median of the rounds).

Writes its section of benchmarks/RESULTS-serving.md (between the ``compat`` markers; the
rest of the file is compare.py's and is kept) and benchmarks/RESULTS-compat.json.

Usage: python benchmarks/compat.py [--model-repository DIR] [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from compare import Peer, sentiserve_cmd, versions  # benchmarks/ is the script's folder
from sentiserve.bench.report import machine
from sentiserve.bench.texts import load_texts
from sentiserve.bench.wrk import run_wrk

HERE = Path(__file__).resolve().parent
ROUTES = {"v1": "/v1/sentiment", "tei": "/predict", "vllm": "/v1/classify"}
START, END = "<!-- compat:start -->", "<!-- compat:end -->"
CLIENTS = 32
TARGET = 0.95


def measure(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_texts("rt")
    peer = Peer(sentiserve_cmd(Path(args.model_repository)))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ROUTES}
    try:
        for k in range(args.rounds):
            for name in ROUTES:
                print(f"round {k + 1}: {name}", file=sys.stderr)
                (row,) = run_wrk(
                    peer.url,
                    name,
                    texts.texts,
                    [CLIENTS],
                    duration_s=args.duration,
                    warmup_s=args.warmup,
                )
                rounds[name].append(row.as_dict())
    finally:
        peer.stop()
    return {"machine": machine(), "versions": versions(), "texts": texts.description, **rounds}


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def section(doc: dict[str, Any], args: argparse.Namespace) -> str:
    base = median(doc["v1"], "throughput")
    m = doc["machine"]
    lines = [
        START,
        "## Drop-in routes (benchmarks/compat.py)",
        "",
        f"One `sentiserve serve` (defaults), wrk at {CLIENTS} clients, one {doc['texts']} text "
        f"per request, {args.rounds} rounds of {args.duration:g} s per route, interleaved; "
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores. Target: each drop-in route "
        f"≥ {TARGET:.0%} of /v1/sentiment's throughput.",
        "",
        "| route | req/s (median; each round) | p50 ms | p99 ms | / v1 | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, path in ROUTES.items():
        rows = doc[name]
        rate = median(rows, "throughput")
        each = ", ".join(f"{r['throughput']:.0f}" for r in rows)
        ratio = rate / base if base else float("nan")
        met = "" if name == "v1" else ("yes" if ratio >= TARGET else "no")
        lines.append(
            f"| `{path}` | {rate:.0f} ({each}) | {median(rows, 'p50_ms'):.1f} | "
            f"{median(rows, 'p99_ms'):.1f} | {ratio:.3f} | {met} |"
        )
    lines += ["", "Command: `python benchmarks/compat.py`.", END]
    return "\n".join(lines)


def write_section(path: Path, text: str, start: str, end: str) -> None:
    """Put ``text`` between the markers in ``path`` (appended if there are none); the rest
    of the file, other scripts' sections included, is kept."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(old):
        path.write_text(pattern.sub(lambda _m: text, old))
    else:
        path.write_text(f"{old.rstrip()}\n\n{text}\n")


def write_results(
    doc: dict[str, Any], raw: Path, out: Path, text: str, start: str, end: str
) -> None:
    """A benchmark's results: the raw ``doc`` as JSON at ``raw``, and ``text`` as its
    section of the report at ``out`` (between ``start`` and ``end``)."""
    raw.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    write_section(out, text, start, end)
    print(f"wrote {out} and {raw}", file=sys.stderr)


def rounds_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark that runs interleaved wrk rounds and writes its section
    of RESULTS-serving.md (this one and benchmarks/operations.py)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", default=str(HERE / "RESULTS-serving.md"))
    return parser


def main() -> None:
    args = rounds_parser(__doc__).parse_args()
    os.environ.setdefault("SENTISERVE_LOG_LEVEL", "WARNING")
    doc = measure(args)
    write_results(doc, HERE / "RESULTS-compat.json", Path(args.out), section(doc, args), START, END)


if __name__ == "__main__":
    main()
