"""``sentiserve train``: fine-tune a classifier."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sentiserve.cli.console import console, current_settings, emit_json, user_errors
from sentiserve.cli.options import option
from sentiserve.train.trainer import DEFAULT_BASE_MODEL, TrainConfig


def train(
    model: str = option("base_model", DEFAULT_BASE_MODEL),
    data: str = option("data", "rt"),
    out: Path = typer.Option(
        Path("build/model"), help="Where the fine-tuned model, tokenizer and metrics go."
    ),
    epochs: float = option("epochs", TrainConfig.epochs),
    batch_size: int = option("batch_size", TrainConfig.batch_size),
    learning_rate: float = option("learning_rate", TrainConfig.learning_rate),
    warmup_ratio: float = typer.Option(
        TrainConfig.warmup_ratio, help="Fraction of steps warming up."
    ),
    max_length: int = option("max_length", TrainConfig.max_length),
    seed: int = typer.Option(TrainConfig.seed, help="Random seed."),
    pooling: str = option("pooling", TrainConfig.pooling),
    layer_decay: float = option("layer_decay", TrainConfig.layer_decay),
    max_steps: int | None = option("max_steps", None),
    max_train_examples: int | None = typer.Option(None, help="Train on the first N examples only."),
    labels: str = typer.Option(
        "negative,positive", help="Label names in class order (for data files)."
    ),
    resume: bool = typer.Option(
        False, help="Continue from the newest checkpoint in OUT/checkpoints."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as one JSON line."),
) -> None:
    """Fine-tune with Hugging Face Trainer (dynamic padding, best epoch kept) and write
    accuracy, F1 and the confusion matrix next to the saved model."""
    from sentiserve.data import load_corpus
    from sentiserve.train.trainer import train as run_train

    with user_errors():
        config = TrainConfig(
            base_model=model,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_ratio=warmup_ratio,
            max_length=max_length,
            seed=seed,
            pooling=pooling,
            layer_decay=layer_decay,
            max_steps=max_steps,
            max_train_examples=max_train_examples,
            label_names=tuple(labels.split(",")),
        )
        corpus = load_corpus(data, config.label_names, cache_dir=current_settings().cache_dir)
        result = run_train(corpus, out, config, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, the first process reports for all
    assert result.test is not None  # the CLI always scores the held-out split
    summary = {
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "validation": result.validation.to_dict(),
        "test": result.test.to_dict(),
    }
    if json_out:
        emit_json(summary)
    else:
        console.print(
            f"saved to [bold]{out}[/]: validation accuracy {result.validation.accuracy:.4f}, "
            f"held-out accuracy {result.test.accuracy:.4f} (F1 {result.test.f1:.4f}), "
            f"{result.steps} steps in {result.seconds:.0f}s"
        )
