"""``sentiserve optimize``: build and check every engine variant."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sentiserve.cli.console import (
    console,
    current_settings,
    emit_json,
    engines_line,
    step_printer,
    user_errors,
)
from sentiserve.cli.options import variant_names, variants_option
from sentiserve.optimize.variants import OptimizeResult, OptimizeSettings


def report_table(result: OptimizeResult) -> Table:
    table = Table(title="engine variants (held-out split)", title_justify="left")
    for col in (
        "variant",
        "accuracy",
        "agreement",
        "max |Δp| batched",
        "seq/s (batch 8)",
        "eligible",
        "note",
    ):
        table.add_column(col)
    for name, r in result.reports.items():
        table.add_row(
            name,
            "-" if r.accuracy is None else f"{r.accuracy:.4f}",
            f"{r.agreement:.4f}",
            f"{r.max_batch_delta:.1e}",
            f"{r.throughput:.0f}",
            "yes" if r.eligible else "no",
            r.note,
        )
    for name, why in result.skipped.items():
        if name not in result.reports:
            table.add_row(name, "-", "-", "-", "-", "-", why)
    return table


def optimize(
    model: Path = typer.Option(
        Path("build/model"),
        "--checkpoint",
        help="Fine-tuned model folder (a checkpoint: tokenizer, config).",
    ),
    onnx: Path = typer.Option(Path("build/onnx/model.onnx"), help="Exported ONNX graph."),
    out: Path = typer.Option(
        Path("build/optimized"), help="Folder for the variants and optimize.json."
    ),
    data: str = typer.Option("rt", help="Data whose held-out split the checks use."),
    max_length: int = typer.Option(256, help="Longest text in tokens."),
    variants: str = variants_option(),
    invariance_texts: int = typer.Option(
        OptimizeSettings.invariance_texts, help="Texts in the batch-invariance check."
    ),
    held_out_limit: int | None = typer.Option(None, help="Score on at most N held-out texts."),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON line."),
) -> None:
    """ONNX Runtime fusion (fp32), static and dynamic int8, fp16 and TensorRT (GPU only),
    each checked for accuracy, agreement with fp32, batch invariance and speed."""
    from sentiserve.data import load_corpus
    from sentiserve.optimize.variants import optimize as run_optimize

    with user_errors():
        settings = OptimizeSettings(
            invariance_texts=invariance_texts,
            held_out_limit=held_out_limit,
            threads=threads,
            variants=variant_names(variants),
        )
        corpus = load_corpus(data, cache_dir=current_settings().cache_dir)
        result = run_optimize(
            onnx,
            model,
            out,
            corpus,
            max_length=max_length,
            settings=settings,
            progress=step_printer(),
        )
    if json_out:
        emit_json(result.to_dict())
        return
    console.print(report_table(result))
    console.print(engines_line(result.defaults))
