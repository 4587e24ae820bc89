"""``sentiserve data``: list data sources and describe one."""

from __future__ import annotations

import typer
from rich.table import Table

from sentiserve.cli.console import console, current_settings, emit_json, user_errors


def data(
    source: str = typer.Argument(
        "rt", help="rt, imdb, a CSV/TSV/JSONL/Parquet file or an aclImdb folder."
    ),
    labels: str = typer.Option(
        "negative,positive", help="Label names in class order, comma-separated."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on one line."),
) -> None:
    """List the data sources, then show counts, label balance and lengths of SOURCE."""
    from sentiserve.data import BUILTIN_SOURCES, load_corpus
    from sentiserve.data.stats import corpus_stats

    with user_errors():
        corpus = load_corpus(
            source, tuple(labels.split(",")), cache_dir=current_settings().cache_dir
        )
    stats = corpus_stats(corpus)
    if json_out:
        emit_json({"sources": BUILTIN_SOURCES, **stats})
        return
    sources = Table(title="data sources", title_justify="left")
    sources.add_column("source")
    sources.add_column("what")
    for name, what in BUILTIN_SOURCES.items():
        sources.add_row(name, what)
    sources.add_row(
        "PATH", "CSV, TSV, JSONL or Parquet with text and label columns; aclImdb folder"
    )
    console.print(sources)
    table = Table(title=f"{corpus.name}: {corpus.description}", title_justify="left")
    for col in ("split", "n", *corpus.label_names, "words mean", "p50", "p95", "max"):
        table.add_column(col, justify="right")
    for split, s in stats["splits"].items():
        table.add_row(
            split,
            str(s["n"]),
            *(str(v) for v in s["labels"].values()),
            str(s["words_mean"]),
            str(s["words_p50"]),
            str(s["words_p95"]),
            str(s["words_max"]),
        )
    console.print(table)
