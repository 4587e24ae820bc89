"""``sentiserve repository``: write and inspect model repositories."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sentiserve.cli.console import console, emit_json, engines_line, user_errors
from sentiserve.engine.tokenizer import Truncation
from sentiserve.repository.layout import DEFAULT_MODEL, DEFAULT_ROOT

app = typer.Typer(
    help="Write and inspect model repositories (Triton layout).", no_args_is_help=True
)


@app.command("build")
def build(
    from_dir: Path = typer.Option(
        Path("build"), "--from", help="Build folder with model/ and optimized/."
    ),
    out: Path = typer.Option(
        DEFAULT_ROOT, "--out", "--model-repository", help="Model repository root."
    ),
    name: str = typer.Option(DEFAULT_MODEL, help="Model name in the repository."),
    truncation: Truncation = typer.Option(Truncation.HEAD_TAIL, help="Long-text policy."),
) -> None:
    """Write a new, verified version of NAME from a build folder (atomically)."""
    from sentiserve.pipeline import write_from_build

    with user_errors():
        version = write_from_build(from_dir, out, name, truncation=truncation)
    console.print(
        f"wrote [bold]{version.path}[/] (default engines {version.manifest.default_engine})"
    )


@app.command("show")
def show(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, help="Model name."),
    version: int | None = typer.Option(None, help="Version (default: newest)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as one JSON line."),
) -> None:
    """Verify a version's checksums and show its manifest."""
    from sentiserve.repository.layout import ModelRepository

    with user_errors():
        loaded = ModelRepository(model_repository).load(model, version)
    m = loaded.manifest
    if json_out:
        emit_json(m.model_dump(mode="json"))
        return
    console.print(f"[bold]{m.model}[/] v{m.version} at {loaded.path}: checksums verified")
    console.print(f"labels {m.labels}, max_length {m.max_length}, truncation {m.truncation.value}")
    table = Table(title="engines", title_justify="left")
    for col in ("variant", "file", "MB", "accuracy", "max |Δp| batched", "eligible"):
        table.add_column(col)
    for name, e in m.engines.items():
        ev = m.evaluation.get(name, {})
        nan = float("nan")
        table.add_row(name, e.file, f"{e.bytes / 1e6:.1f}", f"{ev.get('accuracy', nan):.4f}",
                      f"{ev.get('max_batch_delta', nan):.1e}",
                      str(ev.get("eligible", "-")))  # fmt: skip
    console.print(table)
    console.print(engines_line(m.default_engine))
