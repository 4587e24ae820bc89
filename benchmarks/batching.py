"""What the server's batches are worth to the engine, with no server and no client.

The same engine layout as ``sentiserve serve`` on this machine (one one-thread instance per
core, sharing one session where the engine allows it) runs the same rt texts cut into
batches in several ways, each scheme in turn, several rounds interleaved:

- **a closed loop of 32 clients**, each with one text waiting at a time: a free instance
  cuts its batch from what waits as the server's worker does (``serve.batcher.cut``: its
  fair share, around the oldest text) and, when its call returns, those clients send their
  next texts. With one text per call, with the server's defaults, with
  ``--batch-window 8``, and with length grouping off. These also give each text's latency
  (engine time and queueing);
- **one text per call** without the loop: every instance takes the next text (the plain
  FastAPI peer's engine work);
- **random batches** of 4, 8 and 32 texts (arrival order, no grouping);
- **the ceiling**: every text at once, length-sorted, in batches of 32 (what compare.py
  calls the engine ceiling; a server only ever holds its clients' texts).

What it tells: how much of the ceiling the server's batch shape can reach before the server
pays for HTTP, JSON and tokenizing on the same cores. Writes its section of
benchmarks/RESULTS-serving.md (between the ``batching`` markers) and
benchmarks/RESULTS-batching.json.

Usage: python benchmarks/batching.py [--model-repository DIR] [--rounds 3] [--texts 1200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compare import (
    on_threads,
    side_by_side_rate,
    sorted_batches,
)  # benchmarks/ is the script's folder
from compat import write_results
from sentiserve.bench.report import machine
from sentiserve.bench.texts import load_texts
from sentiserve.engine.base import Engine
from sentiserve.engine.instances import available_cores
from sentiserve.serve.batcher import BatchingConfig, cut

HERE = Path(__file__).resolve().parent
START, END = "<!-- batching:start -->", "<!-- batching:end -->"
CLIENTS = 32
RANDOM_SIZES = (4, 8, 32)
WINDOW = 8


@dataclass(frozen=True)
class Run:
    """One scheme's pass over the texts."""

    texts: int
    calls: int
    padded_tokens: int
    seconds: float
    latencies_ms: tuple[float, ...] = ()
    """Closed loop only: each text's time from sent to answered, in steady state (the
    first and last ``clients`` texts left out: the start and the drain)."""

    @property
    def rate(self) -> float:
        return self.texts / self.seconds

    def latency(self, q: float) -> float | None:
        if len(self.latencies_ms) < 2:
            return None
        return float(np.percentile(self.latencies_ms, q))


def run_batches(engines: Sequence[Engine], batches: list[Any]) -> Run:
    """Fixed ``batches`` (padded) through ``engines`` side by side."""
    texts = sum(len(b.input_ids) for b in batches)
    return Run(
        texts=texts,
        calls=len(batches),
        padded_tokens=sum(int(b.input_ids.size) for b in batches),
        seconds=texts / side_by_side_rate(list(engines), batches),
    )


def closed_loop(
    engines: Sequence[Engine],
    pad: Callable[[list[list[int]]], Any],
    encoded: list[list[int]],
    config: BatchingConfig,
    clients: int = CLIENTS,
) -> Run:
    """``clients`` clients, one text waiting each, served by ``engines`` side by side; a
    free instance cuts its batch as the server's worker does (``batcher.cut``: around the
    oldest text, capped at its fair share) and, when its call returns, those clients send
    their next texts. Every text in ``encoded`` is sent once."""
    cond = threading.Condition()
    upcoming = enumerate(encoded)
    now = time.perf_counter()
    # (ids, sent at, its place in the sending order), oldest first.
    waiting = [(ids, now, k) for _, (k, ids) in zip(range(clients), upcoming, strict=False)]
    busy = [0]
    calls, padded_tokens, done = [0], [0], [0]
    latencies: list[tuple[int, float]] = []
    failed: list[BaseException] = []

    def work(engine: Engine) -> None:
        try:
            serve(engine)
        except BaseException as exc:  # stop every worker, re-raised below
            with cond:
                failed.append(exc)
                cond.notify_all()

    def serve(engine: Engine) -> None:
        while True:
            with cond:
                while not waiting and busy[0] > 0 and not failed:
                    cond.wait()
                if not waiting or failed:
                    cond.notify_all()
                    return
                lengths = [len(ids) for ids, _, _ in waiting]
                chosen = set(cut(lengths, len(engines) - busy[0], config))
                batch = [w for k, w in enumerate(waiting) if k in chosen]
                waiting[:] = [w for k, w in enumerate(waiting) if k not in chosen]
                busy[0] += 1
            padded = pad([ids for ids, _, _ in batch])
            engine.infer(padded.input_ids, padded.attention_mask)
            with cond:
                now = time.perf_counter()
                busy[0] -= 1
                calls[0] += 1
                padded_tokens[0] += int(padded.input_ids.size)
                done[0] += len(batch)
                latencies.extend((k, (now - sent) * 1000) for _, sent, k in batch)
                # Each answered client sends its next text, if any are left.
                waiting.extend((ids, now, k) for _, (k, ids) in zip(batch, upcoming, strict=False))
                cond.notify_all()

    seconds = on_threads(work, engines)
    if failed:
        raise failed[0]
    steady = tuple(ms for k, ms in latencies if clients <= k < len(encoded) - clients)
    return Run(done[0], calls[0], padded_tokens[0], seconds, steady)


def schemes(
    engines: Sequence[Engine], tokenizer: Any, encoded: list[list[int]]
) -> dict[str, Callable[[], Run]]:
    """Each scheme as a function that runs it once over ``encoded`` (in a fixed shuffled
    order: the order clients would send them)."""
    pad = tokenizer.pad
    shuffled = encoded[:]
    random.Random(0).shuffle(shuffled)

    def chunks(size: int) -> list[Any]:
        return [pad(shuffled[s : s + size]) for s in range(0, len(shuffled), size)]

    def loop(**settings: Any) -> Callable[[], Run]:
        return lambda: closed_loop(engines, pad, shuffled, BatchingConfig(**settings))

    out: dict[str, Callable[[], Run]] = {
        "one text per call": lambda: run_batches(engines, chunks(1)),
        f"one text per call, oldest first, {CLIENTS} clients": loop(max_batch_size=1),
        f"the server's batches at {CLIENTS} clients": loop(),
        f"the same, --batch-window {WINDOW}": loop(batch_window=WINDOW),
        "the same, length grouping off": loop(group_by_length=False),
    }
    for size in RANDOM_SIZES:
        out[f"random batches of {size}"] = lambda size=size: run_batches(engines, chunks(size))
    out["ceiling: length-sorted batches of 32"] = lambda: run_batches(
        engines, sorted_batches(tokenizer, shuffled)
    )
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    cores = available_cores()
    model = open_model(ModelRepository(Path(args.model_repository)).load("sentiment"), threads=1)
    # The server's layout: one-thread instances, on one session where the engine allows.
    engines = model.instances(cores, 1)
    texts = load_texts("rt")
    encoded = model.tokenizer.encode(list(texts.texts)[: args.texts])
    ways = schemes(engines, model.tokenizer, encoded)
    ways[next(iter(ways))]()  # warm-up: the first calls allocate
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for k in range(args.rounds):
        for name, once in ways.items():
            print(f"round {k + 1}: {name}", file=sys.stderr)
            run = once()
            runs[name].append(
                {
                    "texts_s": run.rate,
                    "mean_size": run.texts / run.calls,
                    "padded_per_text": run.padded_tokens / run.texts,
                    "p50_ms": run.latency(50),
                    "p99_ms": run.latency(99),
                }
            )
    return {
        "machine": machine(),
        "texts": f"{len(encoded)} texts from the {texts.description}",
        "mean_tokens": statistics.fmean(len(e) for e in encoded),
        "instances": len(engines),
        "sessions": len({id(e) for e in engines}),
        "rounds": runs,
    }


def section(doc: dict[str, Any]) -> str:
    runs = doc["rounds"]
    rate = {name: statistics.median(r["texts_s"] for r in rows) for name, rows in runs.items()}
    ceiling = rate[next(n for n in runs if n.startswith("ceiling"))]
    m = doc["machine"]
    lines = [
        START,
        "## The engine's batches alone (benchmarks/batching.py)",
        "",
        f"No server, no client: {doc['instances']} one-thread instances on "
        f"{doc['sessions']} session(s), as `sentiserve serve` lays them out, {doc['texts']} "
        f"(mean {doc['mean_tokens']:.1f} tokens) per scheme, schemes interleaved over "
        f"{len(next(iter(runs.values())))} round(s); {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores.",
        "",
        "| batches | mean size | padded tokens per text | texts/s (median; each round) "
        "| of the ceiling | p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        each = ", ".join(f"{r['texts_s']:.0f}" for r in rows)
        size = statistics.median(r["mean_size"] for r in rows)
        padded = statistics.median(r["padded_per_text"] for r in rows)
        timed = [r for r in rows if r.get("p99_ms") is not None]
        latency = (
            f"{statistics.median(r['p50_ms'] for r in timed):.0f} / "
            f"{statistics.median(r['p99_ms'] for r in timed):.0f}"
            if timed
            else ""
        )
        lines.append(
            f"| {name} | {size:.1f} | {padded:.1f} | {rate[name]:.0f} ({each}) | "
            f"{rate[name] / ceiling:.2f} | {latency} |"
        )
    lines += [
        "",
        "The server's figure at 32 clients (RESULTS-serving.md, `rt`) can reach at most its "
        "batches' share of the ceiling here, before HTTP, JSON and tokenizing take their "
        "part of the same cores. Latency (closed loops only): from a text's sending to its "
        "answer, steady state, engine time and queueing only.",
        "",
        "Command: `python benchmarks/batching.py`.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1200, help="rt texts per scheme")
    parser.add_argument("--out", default=str(HERE / "RESULTS-serving.md"))
    args = parser.parse_args()
    if args.rounds < 1 or args.texts < CLIENTS:
        parser.error(f"--rounds must be >= 1 and --texts >= {CLIENTS}")
    os.environ.setdefault("SENTISERVE_LOG_LEVEL", "WARNING")
    doc = measure(args)
    write_results(doc, HERE / "RESULTS-batching.json", Path(args.out), section(doc), START, END)


if __name__ == "__main__":
    main()
