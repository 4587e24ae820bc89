"""``sentiserve evaluate``: score the served form of a model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, emit_json, user_errors
from sentiserve.engine.base import Task
from sentiserve.errors import ConfigError
from sentiserve.repository.layout import DEFAULT_ROOT


def evaluate(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name."),
    version: int | None = typer.Option(None, help="Version (default: newest)."),
    engine: str | None = typer.Option(
        None, help="Engine variant (default: the manifest's for this device)."
    ),
    data: str = typer.Option("rt", help="rt, imdb, a data file or an aclImdb folder."),
    split: str = typer.Option("test", help="train, validation or test (held out)."),
    limit: int | None = typer.Option(None, help="Score the first N examples only."),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on one line."),
    out: Path | None = typer.Option(
        None, help="Also write reliability.png and by_length.json (accuracy per length) here."
    ),
) -> None:
    """Accuracy, F1, confusion matrix and calibration (ECE, 15 bins) of the model exactly as
    the server runs it (the repository's tokenizer, engine and temperature). A multi-label
    model is scored on a file of label sets: macro and per-label F1, whole-set accuracy,
    mean average precision and ECE; a regression model on numeric labels (the whole file):
    MSE, Spearman and Pearson."""
    from sentiserve.data import load_corpus
    from sentiserve.evaluate import evaluate as run_evaluate
    from sentiserve.evaluate import reliability_png
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    with user_errors():
        loaded = ModelRepository(model_repository).load(model, version)
        labels = tuple(loaded.manifest.labels)
        served = open_model(loaded, engine=engine, threads=threads)
        if loaded.manifest.task == Task.REGRESSION:
            from sentiserve.data import BUILTIN_SOURCES
            from sentiserve.data.files import read_scores
            from sentiserve.evaluate import evaluate_scores

            if data in BUILTIN_SOURCES:
                raise ConfigError(
                    f"{model} is a regression model: evaluate it on a file with a numeric "
                    "label column (--data FILE)"
                )
            texts, targets = read_scores(Path(data))
            found = evaluate_scores(served, texts[:limit], targets[:limit])
            summary = {
                "model": model,
                "version": loaded.version,
                "engine": served.variant,
                "data": data,
                **found,
            }
            if json_out:
                emit_json(summary)
            else:
                console.print(
                    f"{model} v{loaded.version} ({served.variant}) on {data}: MSE "
                    f"[bold]{found['mse']:.4g}[/], Spearman {found['spearman']:.4f}, Pearson "
                    f"{found['pearson']:.4f}, n={found['n']}"
                )
            return
        if loaded.manifest.task == Task.MULTI_LABEL:
            from sentiserve.data import BUILTIN_SOURCES
            from sentiserve.data.files import load_label_sets

            if data in BUILTIN_SOURCES:
                raise ConfigError(
                    f"{model} is a multi-label model: evaluate it on a file of label sets "
                    "(--data FILE; a labels column, or one 0/1 column per label)"
                )
            from sentiserve.evaluate import evaluate_label_sets

            sets = load_label_sets(Path(data), labels).split(split).take(limit)
            found = evaluate_label_sets(served, sets)
            summary = {
                "model": model,
                "version": loaded.version,
                "engine": served.variant,
                "data": data,
                "split": split,
                **found,
            }
            if json_out:
                emit_json(summary)
            else:
                console.print(
                    f"{model} v{loaded.version} ({served.variant}) on {data}/{split}: "
                    f"macro F1 [bold]{found['f1']:.4f}[/], whole-set accuracy "
                    f"{found['accuracy']:.4f}, mAP {found['mean_average_precision']:.4f}, "
                    f"ECE {found['ece']:.4f}, n={found['n']}"
                )
                for name in labels:
                    console.print(
                        f"  {name}: F1 {found['f1_per_class'][name]:.4f}, "
                        f"AP {found['average_precision'][name]:.4f}"
                    )
            return
        corpus = load_corpus(data, labels, cache_dir=current_settings().cache_dir)
        if corpus.label_names != labels:
            raise ConfigError(
                f"{corpus.name} is labelled {', '.join(corpus.label_names)} but {model} "
                f"answers {', '.join(labels)}: evaluate it on a file labelled like the model "
                "(--data FILE)"
            )
        examples = corpus.split(split).take(limit)
        evaluation = run_evaluate(served, examples)
    scores = evaluation.scores
    result = {
        "model": model,
        "version": loaded.version,
        "engine": served.variant,
        "data": corpus.name,
        "split": split,
        "temperature": served.temperature,
        **evaluation.to_dict(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        title = f"{model} v{loaded.version} ({served.variant}), {corpus.name}/{split}"
        reliability_png(evaluation, out / "reliability.png", title)
        (out / "by_length.json").write_text(json.dumps(evaluation.by_length, indent=1) + "\n")
    if json_out:
        emit_json(result)
        return
    console.print(
        f"{model} v{loaded.version} ({served.variant}) on {corpus.name}/{split}: "
        f"accuracy [bold]{scores.accuracy:.4f}[/], F1 {scores.f1:.4f}, "
        f"ECE {evaluation.ece:.4f} (temperature {served.temperature:g}), n={scores.n}"
    )
    console.print("confusion (rows true, columns predicted):")
    width = max(len(label) for label in scores.labels)
    for label, row in zip(scores.labels, scores.confusion, strict=True):
        console.print(f"  {label:>{width}}  " + "  ".join(f"{v:6d}" for v in row))
