"""``sentiserve export``: ONNX export with a parity check."""

from __future__ import annotations

from pathlib import Path

import typer

from sentiserve.cli.console import console, current_settings, emit_json, user_errors
from sentiserve.export.onnx import OPSET, PARITY_TOLERANCE, SAMPLE_TEXTS


def export(
    model: Path = typer.Option(
        Path("build/model"), "--checkpoint", help="Fine-tuned model folder (a checkpoint)."
    ),
    out: Path = typer.Option(Path("build/onnx/model.onnx"), help="The ONNX file to write."),
    data: str | None = typer.Option(
        None, help="Check parity on this source's validation texts (default: built-in samples)."
    ),
    opset: int = typer.Option(OPSET, help="ONNX opset (17 or newer)."),
    max_length: int = typer.Option(256, help="Longest text in tokens for the parity check."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Export to ONNX (dynamic batch and sequence axes) and fail if any logit differs from
    PyTorch by more than 1e-4."""
    from sentiserve.export.onnx import export as run_export

    with user_errors():
        texts: tuple[str, ...] = SAMPLE_TEXTS
        if data:
            from sentiserve.data import load_corpus

            texts = load_corpus(data, cache_dir=current_settings().cache_dir).validation.texts[:64]
        result = run_export(model, out, texts=texts, max_length=max_length, opset=opset)
    if json_out:
        emit_json(
            {
                "path": str(result.path),
                "inputs": list(result.input_names),
                "max_abs_diff": result.max_abs_diff,
                "checked": result.checked,
            }
        )
        return
    console.print(
        f"wrote [bold]{result.path}[/] (inputs {', '.join(result.input_names)}); parity: "
        f"max |Δlogit| {result.max_abs_diff:.2e} over {result.checked} texts "
        f"(limit {PARITY_TOLERANCE:g})"
    )
