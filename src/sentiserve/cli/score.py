"""``sentiserve score``: classify every row of a file, folder or S3 prefix into Parquet or
JSONL, resumably, in one process or on Ray."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, emit_json, user_errors
from sentiserve.repository.layout import DEFAULT_ROOT
from sentiserve.score.inputs import InputSpec
from sentiserve.score.run import CHUNK_ROWS, Progress, Summary

JSON_EVERY_S = 5.0
"""How often ``--json`` prints a progress line."""


def score(
    source: str = typer.Argument(
        ..., metavar="INPUT", help="CSV, TSV, JSONL or Parquet file, a folder of them, or s3://."
    ),
    output: str = typer.Argument(
        ..., metavar="OUTPUT", help="A .parquet or .jsonl file, local or s3://bucket/key."
    ),
    text_column: str = typer.Option("text", help="Column holding the texts."),
    pair_column: str | None = typer.Option(
        None,
        help="Column holding each pair's second text, for models that compare two texts "
        "(NLI, cross-encoders).",
    ),
    id_column: str | None = typer.Option(
        None, help="Column holding row ids (default: row number)."
    ),
    model_repository: str = typer.Option(
        str(DEFAULT_ROOT),
        envvar="SENTISERVE_MODEL_REPOSITORY",
        help="Model repository: a folder or s3://bucket/prefix.",
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name in the repository."),
    version: int | None = typer.Option(None, help="Model version (default: the newest)."),
    engine: str | None = typer.Option(None, help="Engine variant (default: the manifest's)."),
    instances: int | None = typer.Option(
        None, min=1, help="Engine instances side by side (default: one per core)."
    ),
    chunk_rows: int = typer.Option(CHUNK_ROWS, min=1, help="Rows per chunk (and part file)."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray Data (see --ray-address)."),
    ray_address: str | None = typer.Option(
        None, help="With --ray: an existing cluster (ray://host:10001); default: start one here."
    ),
    ray_workers: int = typer.Option(2, min=1, help="With --ray: scoring actors."),
    json_out: bool = typer.Option(False, "--json", help="JSON progress lines and summary."),
) -> None:
    """Score every row of INPUT into OUTPUT: id, label, score, each label's probability,
    model and version; rows with an empty or non-string text get an error instead of a
    label. Same tokenizer, engine and long-text policy as the server. Interrupted runs
    continue where they stopped when the same command runs again; OUTPUT appears only when
    complete."""
    settings = current_settings()
    spec = InputSpec(text_column, id_column, pair_column)
    with user_errors():
        if ray:
            from sentiserve.score.ray_data import score_with_ray

            summary = score_with_ray(
                source,
                output,
                repository=model_repository,
                cache_dir=settings.cache_dir,
                model=model,
                version=version,
                spec=spec,
                workers=ray_workers,
                address=ray_address,
                engine=engine,
            )
        else:
            summary = _run(
                source,
                output,
                model_repository,
                settings.cache_dir,
                model,
                version,
                spec,
                instances,
                engine,
                chunk_rows,
                json_out,
            )
    if json_out:
        emit_json({"event": "done", **summary.as_dict()})
        return
    console.print(
        f"[green]scored[/] {summary.rows:,} rows ({summary.errors:,} errors) in "
        f"{summary.seconds:.1f} s, {summary.rows_per_s:,.0f} rows/s -> {summary.output}"
    )
    console.print("labels: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.labels.items())))
    if summary.errors:
        shown = "; ".join(f"{i}: {e}" for i, e in summary.first_errors)
        console.print(f"[yellow]rows with errors[/] (first {len(summary.first_errors)}): {shown}")


def _run(
    source: str,
    output: str,
    repository: str,
    cache_dir: Path,
    model: str,
    version: int | None,
    spec: InputSpec,
    instances: int | None,
    engine: str | None,
    chunk_rows: int,
    json_out: bool,
) -> Summary:
    import functools

    from rich import progress as bars

    from sentiserve.score.run import score as run_score

    run = functools.partial(
        run_score,
        source,
        output,
        repository=repository,
        cache_dir=cache_dir,
        model=model,
        version=version,
        spec=spec,
        instances=instances,
        engine=engine,
        chunk_rows=chunk_rows,
    )
    if json_out:
        last = [0.0]

        def report(p: Progress) -> None:
            if time.monotonic() - last[0] >= JSON_EVERY_S:
                last[0] = time.monotonic()
                emit_json(
                    {
                        "event": "progress",
                        "rows": p.rows,
                        "total": p.total,
                        "errors": p.errors,
                        "rows_per_s": round(p.rows_per_s, 1),
                    }
                )

        return run(progress=report)
    columns = (
        bars.TextColumn("scoring"),
        bars.BarColumn(),
        bars.MofNCompleteColumn(),
        bars.TextColumn("{task.fields[rate]:,.0f} rows/s"),
        bars.TimeRemainingColumn(),
    )
    with bars.Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("score", total=None, rate=0.0)

        def show(p: Progress) -> None:
            bar.update(task, completed=p.rows, total=p.total, rate=p.rows_per_s)

        return run(progress=show)
