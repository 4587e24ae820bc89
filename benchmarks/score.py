"""Batch scoring: ``sentiserve score`` over 100,000 rt-like texts, in one process and on a
local Ray with two workers, next to the engine ceiling, on this machine in one run.

- Input: the rt corpus's reviews (train, validation and test), repeated in a fixed order
  to 100,000 rows, one Parquet file (written once into benchmarks/out/).
- Ceiling: the same engine, no I/O: one one-thread session per core side by side over the
  same texts in length-sorted batches of 32 (as benchmarks/compare.py measures it), on the
  first 20,000 texts.
- Single process: ``sentiserve score`` (its defaults) as a child process; wall time, rows/s
  and the child's peak resident memory (getrusage). With ``--memory-rows``, the peak again
  for inputs of other sizes (flat memory whatever the input size is the target).
- Ray: ``sentiserve score --ray --ray-workers 2`` (a local Ray started for the run).

Writes a "Batch scoring" section at the end of benchmarks/RESULTS.md (kept there when
benchmarks/engines.py rewrites the file) and the raw numbers to benchmarks/RESULTS-score.json.

Usage: python benchmarks/score.py [--rows 100000] [--model-repository DIR] [--no-ray]
       [--memory-rows 5000 40000 300000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results import replace_section

HERE = Path(__file__).resolve().parent
SECTION = "## Batch scoring (`benchmarks/score.py`)"


def make_input(rows: int, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentiserve.data import load_corpus

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    corpus = load_corpus("rt")
    texts = [*corpus.train.texts, *corpus.validation.texts, *corpus.test.texts]
    column = [texts[i % len(texts)] for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": column}), path)
    return path


def ceiling(repository: Path, texts: list[str]) -> float:
    """seq/s of one one-thread session per core over length-sorted batches of 32 (measured
    as benchmarks/compare.py measures its ceiling)."""
    from compare import side_by_side_rate, sorted_batches
    from sentiserve.engine.instances import available_cores
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    model = open_model(ModelRepository(repository).load("sentiment"), threads=1)
    engines = [model.engine] + [model.open_engine(1) for _ in range(available_cores() - 1)]
    batches = sorted_batches(model.tokenizer, model.tokenizer.encode(texts))
    return max(side_by_side_rate(engines, batches) for _ in range(2))


def timed(command: list[str]) -> dict[str, float]:
    """Wall seconds and the child's peak resident MB (its own rusage)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{command[:4]} failed: {child.stderr.read()[-2000:] if child.stderr else ''}")
    summary = json.loads((child.stdout.read() if child.stdout else "").strip().splitlines()[-1])
    return {
        "seconds": seconds,
        "rows_per_s": summary["rows"] / seconds,
        "peak_mb": usage.ru_maxrss / 1024,
        "rows": summary["rows"],
    }


def prepare(rows: int, repository: str | None) -> None:
    """The input file, and the ceiling with a repository, printed as JSON (run as a child
    process: see main)."""
    import pyarrow.parquet as pq

    source = make_input(rows, HERE / "out" / f"score-input-{rows}.parquet")
    found: dict[str, Any] = {"source": str(source)}
    if repository is not None:
        texts = pq.read_table(source).column("text").to_pylist()[:20_000]
        found["ceiling_seq_s"] = ceiling(Path(repository), texts)
    print(json.dumps(found))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument(
        "--memory-rows",
        type=int,
        nargs="*",
        default=[],
        help="Also score inputs of these sizes (one process) and report each peak RSS.",
    )
    parser.add_argument("--prepare", choices=["input", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    if args.prepare:
        prepare(args.rows, args.model_repository if args.prepare == "ceiling" else None)
        return
    import pyarrow.parquet as pq

    from sentiserve.bench.report import machine

    # Everything heavy runs in child processes. A child's getrusage peak includes the
    # resident size of the process that forked it (Linux records the copied memory's
    # high-water mark at exec), so this process must stay small for the peaks to be the
    # children's own.
    def prepared(rows: int, what: str) -> dict[str, Any]:
        command = [sys.executable, __file__, "--prepare", what, "--rows", str(rows)]
        done = subprocess.run(
            [*command, "--model-repository", args.model_repository],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    first = prepared(args.rows, "ceiling")
    source = first["source"]
    result: dict[str, Any] = {"rows": args.rows, "ceiling_seq_s": first["ceiling_seq_s"]}
    base = [sys.executable, "-m", "sentiserve", "score"]
    repo = ["--model-repository", args.model_repository, "--json"]
    out = HERE / "out" / "scores.parquet"
    out.unlink(missing_ok=True)
    result["single"] = timed([*base, source, str(out), *repo])
    if not args.no_ray:
        ray_out = HERE / "out" / "scores-ray.parquet"
        ray_out.unlink(missing_ok=True)
        result["ray"] = timed([*base, source, str(ray_out), *repo, "--ray", "--ray-workers", "2"])
        result["ray_equal"] = pq.read_table(out).equals(pq.read_table(ray_out))
    result["memory"] = {args.rows: result["single"]["peak_mb"]}
    for rows in args.memory_rows:
        if rows != args.rows:
            sized = HERE / "out" / f"scores-{rows}.parquet"
            sized.unlink(missing_ok=True)
            source_n = prepared(rows, "input")["source"]
            result["memory"][rows] = timed([*base, source_n, str(sized), *repo])["peak_mb"]
            sized.unlink()
    info = machine()
    lines = [
        SECTION,
        "",
        f"{args.rows:,} rt reviews (repeated) in one Parquet file, `sentiserve score` with its "
        f"defaults, on {info['cpu']} ({info['cores']} cores), Python {platform.python_version()}.",
        "",
        "| run | rows/s | / ceiling | seconds | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| engine ceiling (no I/O, one one-thread session per core) | "
        f"{result['ceiling_seq_s']:.0f} | 1.00 | | |",
    ]
    for name in ("single", "ray"):
        if name in result:
            r = result[name]
            label = "one process" if name == "single" else "Ray, two local workers"
            lines.append(
                f"| {label} | {r['rows_per_s']:.0f} | "
                f"{r['rows_per_s'] / result['ceiling_seq_s']:.2f} | {r['seconds']:.1f} | "
                f"{r['peak_mb']:.0f} |"
            )
    if "ray" in result:
        ratio = result["ray"]["rows_per_s"] / result["single"]["rows_per_s"]
        lines += [
            "",
            f"Ray / one process: {ratio:.2f} (target ≥ 0.8); outputs identical: "
            f"{'yes' if result['ray_equal'] else '**no**'}. The Ray peak is the driver's "
            "only (its workers are separate processes).",
        ]
    if len(result["memory"]) > 1:
        sizes = sorted(result["memory"])
        lines += [
            "",
            "Peak RSS of one process by input size (rows → MB): "
            + ", ".join(f"{n:,} → {result['memory'][n]:.0f}" for n in sizes)
            + ".",
        ]
    lines += ["", "Targets: one process ≥ 0.9 of the ceiling; peak RSS ≤ 600 MB."]
    replace_section(Path(args.out), SECTION, "\n".join(lines))
    (HERE / "RESULTS-score.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
