"""``sentiserve doctor``: is this machine ready to serve on its GPU (or its CPU)?"""

from __future__ import annotations

import typer
from rich.table import Table

from sentiserve.cli.console import console, emit_json

STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print the checks as one JSON object."),
) -> None:
    """Check the NVIDIA driver and nvidia-smi, the GPU (model, memory, compute capability),
    PyTorch's CUDA and cuDNN, ONNX Runtime's providers, TensorRT, whether the pinned Triton
    image supports this driver, and free disk for the build. Exits 1 when a GPU is present
    but cannot be used; a machine without a GPU passes (it serves on the CPU)."""
    from sentiserve.doctor import as_dicts, gpu_present, run_checks

    results = run_checks()
    failed = any(r.status == "fail" for r in results)
    if json_out:
        emit_json({"gpu": gpu_present(), "ok": not failed, "checks": as_dicts(results)})
    else:
        table = Table(title="sentiserve doctor")
        for column in ("check", "status", "found", "fix"):
            table.add_column(column)
        for r in results:
            table.add_row(r.name, f"[{STYLE[r.status]}]{r.status}[/]", r.found, r.fix)
        console.print(table)
        if not gpu_present():
            console.print("No NVIDIA GPU here: sentiserve serves on the CPU (int8 ONNX).")
    if failed:
        raise typer.Exit(1)
