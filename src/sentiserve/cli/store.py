"""``sentiserve repository publish`` and ``repository pull``: model repositories in S3."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from sentiserve.cli.console import console, emit_json, user_errors

ENDPOINT_HELP = "S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS itself)."


def _progress(description: str, total: int) -> tuple[object, Callable[[str, int], None]]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn(description),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task(description, total=total)
    return bar, lambda _file, n: bar.update(task, advance=n)


def publish(
    folder: Path = typer.Argument(..., help="Model repository folder to upload."),
    url: str = typer.Argument(..., help="Destination, s3://bucket/prefix."),
    endpoint_url: str | None = typer.Option(None, help=ENDPOINT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Upload a model repository to S3 (multipart for large files) with a sha256 manifest
    written last; Triton's --model-repository=s3://... reads the same layout."""
    from sentiserve.repository.stores import s3

    with user_errors():
        total = sum(p.stat().st_size for p in s3.files_to_publish(folder)) if folder.is_dir() else 0
        bar, advance = _progress("publish", total)
        with bar:  # type: ignore[attr-defined]
            manifest = s3.publish(folder, url, endpoint_url=endpoint_url, progress=advance)
    if json_out:
        emit_json({"url": url, "files": len(manifest["files"]), "bytes": total})
        return
    console.print(f"[green]published[/] {len(manifest['files'])} files to {url}")


def pull(
    url: str = typer.Argument(..., help="Source, s3://bucket/prefix."),
    folder: Path = typer.Argument(..., help="Local folder (replaced whole when verified)."),
    endpoint_url: str | None = typer.Option(None, help=ENDPOINT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Download a published model repository, verify every file's sha256, then move it into
    place; a missing or corrupted object is refused and leaves nothing half-written."""
    from sentiserve.repository.stores import s3

    with user_errors():
        manifest = s3.read_manifest(url, endpoint_url=endpoint_url)
        total = sum(int(e["bytes"]) for e in manifest["files"].values())
        bar, advance = _progress("pull", total)
        with bar:  # type: ignore[attr-defined]
            s3.pull(url, folder, endpoint_url=endpoint_url, progress=advance, manifest=manifest)
    if json_out:
        emit_json({"url": url, "folder": str(folder), "files": len(manifest["files"])})
        return
    console.print(f"[green]pulled[/] {len(manifest['files'])} files into {folder} (verified)")
