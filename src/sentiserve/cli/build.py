"""``sentiserve build``: the whole default pipeline in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, emit_json, step_printer, user_errors
from sentiserve.cli.options import option
from sentiserve.engine.tokenizer import Truncation
from sentiserve.pipeline import BuildConfig
from sentiserve.repository.layout import DEFAULT_ROOT
from sentiserve.train.trainer import DEFAULT_BASE_MODEL, TrainConfig

BUILD_EPOCHS = 2.0
"""Default epochs for ``sentiserve build``: keeps the whole build within 20 minutes on two
CPU cores (``sentiserve train`` keeps the tutorial's 3)."""
BUILD_LEARNING_RATE = 8e-5
BUILD_POOLING = "mean"
BUILD_LAYER_DECAY = 1.0


def build(
    data: str = option("data", "rt"),
    model: str = option("base_model", DEFAULT_BASE_MODEL),
    work_dir: Path = typer.Option(Path("build"), help="Intermediate outputs."),
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository to write."),
    name: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name in the repository."),
    epochs: float = option("epochs", BUILD_EPOCHS),
    batch_size: int = option("batch_size", 32),
    learning_rate: float = option("learning_rate", BUILD_LEARNING_RATE),
    max_length: int = option("max_length", TrainConfig.max_length),
    pooling: str = option("pooling", BUILD_POOLING),
    layer_decay: float = option("layer_decay", BUILD_LAYER_DECAY),
    max_steps: int | None = option("max_steps", None),
    truncation: Truncation = typer.Option(
        Truncation.HEAD_TAIL, help="Long-text policy for serving."
    ),
    force: bool = typer.Option(False, help="Rebuild every stage and write a new version."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """data -> fine-tune -> export -> optimize -> model repository. Skips stages that are
    already built and valid; --force rebuilds them."""
    from sentiserve.pipeline import build as run_build

    start = time.perf_counter()
    with user_errors():
        config = BuildConfig(
            data=data,
            work_dir=work_dir,
            repository=model_repository,
            model_name=name,
            train=TrainConfig(
                base_model=model,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                max_length=max_length,
                pooling=pooling,
                layer_decay=layer_decay,
                max_steps=max_steps,
            ),
            truncation=truncation,
            force=force,
            cache_dir=current_settings().cache_dir,
        )
        report = run_build(config, progress=step_printer())
    total = time.perf_counter() - start
    m = report.version.manifest
    accuracy = {k: float(v["accuracy"]) for k, v in m.evaluation.items() if "accuracy" in v}
    summary = {
        "model": m.model,
        "version": m.version,
        "path": str(report.version.path),
        "stages": report.stages,
        "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
        "total_seconds": round(total, 1),
        "default_engine": m.default_engine,
        "accuracy": accuracy,
    }
    if json_out:
        emit_json(summary)
        return
    table = Table(title=f"built {m.model} v{m.version} in {total:.0f}s", title_justify="left")
    table.add_column("stage")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    for stage, result in report.stages.items():
        table.add_row(stage, result, f"{report.seconds.get(stage, 0):.0f}")
    console.print(table)
    console.print("held-out accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()))
    console.print(
        f"default engines: {m.default_engine}; "
        f"repository at [bold]{report.version.path.parent.parent}[/]"
    )
