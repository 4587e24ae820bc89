"""``sentiserve evaluate``: score the served form of a model."""

from __future__ import annotations

from pathlib import Path

import typer

from sentiserve.cli.console import console, emit_json, user_errors
from sentiserve.repository.layout import DEFAULT_MODEL, DEFAULT_ROOT


def evaluate(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, help="Model name."),
    version: int | None = typer.Option(None, help="Version (default: newest)."),
    engine: str | None = typer.Option(
        None, help="Engine variant (default: the manifest's for this device)."
    ),
    data: str = typer.Option("rt", help="rt, imdb, a data file or an aclImdb folder."),
    split: str = typer.Option("test", help="train, validation or test (held out)."),
    limit: int | None = typer.Option(None, help="Score the first N examples only."),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on one line."),
) -> None:
    """Accuracy, F1 and confusion matrix of the model exactly as the server runs it
    (the repository's tokenizer and engine)."""
    from sentiserve.data import load_corpus
    from sentiserve.evaluate import evaluate as run_evaluate
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.runtime import open_model

    with user_errors():
        loaded = ModelRepository(model_repository).load(model, version)
        served = open_model(loaded, engine=engine, threads=threads)
        corpus = load_corpus(data, tuple(loaded.manifest.labels))
        examples = corpus.split(split).take(limit)
        scores = run_evaluate(served, examples)
    result = {
        "model": model,
        "version": loaded.version,
        "engine": served.variant,
        "data": corpus.name,
        "split": split,
        **scores.to_dict(),
    }
    if json_out:
        emit_json(result)
        return
    console.print(
        f"{model} v{loaded.version} ({served.variant}) on {corpus.name}/{split}: "
        f"accuracy [bold]{scores.accuracy:.4f}[/], F1 {scores.f1:.4f}, n={scores.n}"
    )
    console.print("confusion (rows true, columns predicted):")
    width = max(len(label) for label in scores.labels)
    for label, row in zip(scores.labels, scores.confusion, strict=True):
        console.print(f"  {label:>{width}}  " + "  ".join(f"{v:6d}" for v in row))
