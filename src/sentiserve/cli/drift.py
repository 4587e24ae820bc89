"""``sentiserve drift``: a payload log compared offline with the model's reference."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import typer

from sentiserve.cli.console import console, current_settings, emit_json, user_errors
from sentiserve.errors import ConfigError


def drift(
    payloads: list[str] = typer.Argument(
        ...,
        help="Payload log files or folders (JSON Lines, as `sentiserve serve --payload-log` "
        "writes them), or an s3://bucket/prefix of them.",
        show_default=False,
    ),
    model_repository: str = typer.Option(
        "model_repository", help="Repository holding the model's manifest: folder or s3://."
    ),
    model_name: str | None = typer.Option(
        None, help="Model to compare (default: the one answered most in the log)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Compare what a model answered (a payload log) with its reference from the build: each
    label's share, input lengths, the population stability index of both, and what the
    drift alerts would say."""
    from sentiserve.monitoring.drift import compare
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.stores import open_repository
    from sentiserve.serve.payload_sinks import read_events
    from sentiserve.serve.payloads import RESPONSE_TYPE

    with user_errors(), tempfile.TemporaryDirectory(prefix="sentiserve-drift-") as tmp:
        files = [p for source in payloads for p in _local(source, Path(tmp))]
        answers = [
            e["data"]
            for e in read_events(files)
            if e.get("type") == RESPONSE_TYPE and isinstance(e.get("data"), dict)
        ]
        models = collections.Counter(str(a.get("model")) for a in answers)
        if not models:
            raise ConfigError(f"no answers (events of type {RESPONSE_TYPE}) in {payloads}")
        name = model_name or models.most_common(1)[0][0]
        mine = [a for a in answers if a.get("model") == name]
        if not mine:
            raise ConfigError(f"the log has no answers of model {name!r} (it has {dict(models)})")
        versions = collections.Counter(int(a.get("version", 0)) for a in mine)
        version = versions.most_common(1)[0][0]
        store = open_repository(model_repository, current_settings().cache_dir)
        manifest = ModelRepository(store.local()).load(name, version, verify=False).manifest
        if not manifest.reference:
            raise ConfigError(
                f"{name} v{version} has no reference in its manifest (built before references "
                "were recorded); rebuild it with `sentiserve build`"
            )
        given, texts, tokens = _tally(mine)
        report = compare(name, manifest.reference, given, texts, tokens)
    if json_out:
        emit_json({**report.to_dict(), "version": version, "events": len(mine)})
        return
    _print(report, version, len(mine))


def _local(source: str, tmp: Path) -> list[Path]:
    """``source`` as local files: itself, or the ``.jsonl`` objects under an s3:// prefix."""
    if not source.startswith("s3://"):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"payload log {source} does not exist")
        return [path]
    import os

    from sentiserve.repository.stores.s3 import S3Url, client

    url = S3Url.parse(source)
    s3 = client(os.environ.get("AWS_ENDPOINT_URL") or None)
    prefix = f"{url.prefix}/" if url.prefix else ""
    out: list[Path] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith((".jsonl", ".parquet")):
                target = tmp / f"{len(out):06d}-{Path(key).name}"
                s3.download_file(url.bucket, key, str(target))
                out.append(target)
    if not out:
        raise ConfigError(f"no .jsonl or .parquet payload log objects under {source}")
    return out


def _tally(answers: list[dict[str, Any]]) -> tuple[dict[str, int], int, list[int]]:
    """How often each label was given, how many texts were answered, and their token
    counts (where the server counted them)."""
    given: collections.Counter[str] = collections.Counter()
    texts = 0
    tokens: list[int] = []
    for answer in answers:
        labels = answer.get("labels") or []
        texts += len(labels)
        for item in labels:
            given.update(item if isinstance(item, list) else [item])
        tokens += [int(n) for n in answer.get("tokens") or []]
    return dict(given), texts, tokens


def _print(report: Any, version: int, events: int) -> None:
    from rich.table import Table

    console.print(
        f"{report.model} v{version}: {report.texts} texts in {events} logged answers, "
        "against the reference"
    )

    def table(first: str, rows: Any) -> Table:
        out = Table(first, "reference", "served", "change")
        for row in rows:
            out.add_row(row.name, f"{row.expected:.1%}", f"{row.actual:.1%}", f"{row.change:+.1%}")
        return out

    console.print(table("label", report.labels))
    if report.lengths:
        console.print(table("tokens ≤", report.lengths))
        console.print(
            f"median input: {report.median_tokens:g} tokens (reference {report.median_reference:g})"
        )
    psi = [
        f"{what} PSI {value:.3f}"
        for what, value in (("label", report.label_psi), ("length", report.length_psi))
        if value is not None
    ]
    if psi:
        console.print(", ".join(psi) + "  (below 0.1: stable; above 0.25: a real shift)")
    for alert in report.alerts:
        console.print(f"[yellow]drift[/]: {alert}")
    if not report.alerts:
        console.print("[green]no drift[/] beyond the alerts' margins")
