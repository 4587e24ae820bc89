"""``sentiserve build``: the whole default pipeline in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, current_settings, emit_json, step_printer, user_errors
from sentiserve.cli.options import option, variant_names, variants_option
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import ConfigError
from sentiserve.optimize.variants import OptimizeSettings
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
    max_length: int | None = typer.Option(
        None,
        help=f"Longest text in tokens (default: {TrainConfig.max_length} for a fine-tune; "
        "an imported checkpoint's own limit, at most 512).",
    ),
    pooling: str = option("pooling", BUILD_POOLING),
    layer_decay: float = option("layer_decay", BUILD_LAYER_DECAY),
    max_steps: int | None = option("max_steps", None),
    truncation: Truncation = typer.Option(
        Truncation.HEAD_TAIL, help="Long-text policy for serving."
    ),
    held_out_limit: int | None = typer.Option(
        None,
        min=1,
        help="Score the fine-tuned model and check the engines on the first N held-out texts "
        "(default: the whole split).",
    ),
    variants: str = variants_option(),
    force: bool = typer.Option(False, help="Rebuild every stage and write a new version."),
    checkpoint: str | None = typer.Option(
        None,
        help="A classifier fine-tuned elsewhere (Hugging Face folder or hub name): import it "
        "instead of fine-tuning.",
        rich_help_panel="Serve your own model",
    ),
    labels: str | None = typer.Option(
        None,
        help="Class names in output order, comma-separated (default: the checkpoint's id2label).",
        rich_help_panel="Serve your own model",
    ),
    task: str | None = typer.Option(
        None,
        help="single_label_classification (default: the checkpoint's problem_type).",
        rich_help_panel="Serve your own model",
    ),
    eval_data: Path | None = typer.Option(
        None,
        help="Labelled CSV/TSV/JSONL/Parquet (text, label) to gate int8 on accuracy.",
        rich_help_panel="Serve your own model",
    ),
    calibration_data: Path | None = typer.Option(
        None,
        help="Texts without labels (.txt or a text column) for int8 calibration; the gate "
        "without --eval-data (default: a built-in mixed-domain sample).",
        rich_help_panel="Serve your own model",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """data -> fine-tune -> export -> optimize -> model repository; with --checkpoint,
    import -> export -> optimize -> model repository. Skips stages that are already built
    and valid; --force rebuilds them."""
    from sentiserve.pipeline import build as run_build

    start = time.perf_counter()
    with user_errors():
        if checkpoint is None and (labels or task or eval_data or calibration_data):
            raise ConfigError(
                "--labels, --task, --eval-data and --calibration-data go with --checkpoint"
            )
        if checkpoint is not None and data != "rt":
            raise ConfigError(
                "--data is what a fine-tune trains on; an imported checkpoint is checked on "
                "--eval-data (labelled) or --calibration-data (texts)"
            )
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
                max_length=max_length or TrainConfig.max_length,
                pooling=pooling,
                layer_decay=layer_decay,
                max_steps=max_steps,
            ),
            truncation=truncation,
            optimize=OptimizeSettings(
                held_out_limit=held_out_limit, variants=variant_names(variants)
            ),
            force=force,
            cache_dir=current_settings().cache_dir,
            checkpoint=checkpoint,
            labels=tuple(n.strip() for n in labels.split(",")) if labels else None,
            task=task,
            max_length=max_length,
            eval_data=eval_data,
            calibration_data=calibration_data,
        )
        report = run_build(config, progress=step_printer())
    total = time.perf_counter() - start
    m = report.version.manifest
    accuracy = {
        k: float(v["accuracy"]) for k, v in m.evaluation.items() if v.get("accuracy") is not None
    }
    summary = {
        "model": m.model,
        "version": m.version,
        "path": str(report.version.path),
        "stages": report.stages,
        "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
        "total_seconds": round(total, 1),
        "default_engine": m.default_engine,
        "accuracy": accuracy,
        "gate": m.provenance.get("gate", "accuracy"),
        "eligible": {k: v["eligible"] for k, v in m.evaluation.items() if "eligible" in v},
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
    if accuracy:
        console.print(
            "held-out accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items())
        )
    if m.provenance.get("gate") == "agreement":
        agreement = {k: float(v["agreement"]) for k, v in m.evaluation.items() if "agreement" in v}
        console.print(
            f"no labelled data: engines gated on agreement with fp32 over "
            f"{m.provenance.get('dataset')} ("
            + ", ".join(f"{k} {v:.4f}" for k, v in agreement.items())
            + ")"
        )
    for variant, checks in m.evaluation.items():
        if checks.get("eligible") is False:
            console.print(f"[yellow]{variant} not a default[/]: {checks.get('note')}")
    console.print(
        f"default engines: {m.default_engine}; "
        f"repository at [bold]{report.version.path.parent.parent}[/]"
    )
