"""``sentiserve monitor``: a local Prometheus with sentiserve's rules, scraping a server."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from sentiserve.cli.console import console, interrupt_on_sigterm, user_errors
from sentiserve.monitoring.prometheus import DEFAULT_RULES


def monitor(
    target: list[str] = typer.Option(["127.0.0.1:8002"], help="Metrics endpoint(s) to scrape."),
    port: int = typer.Option(9090, help="Prometheus port (on 127.0.0.1)."),
    rules: Path = typer.Option(DEFAULT_RULES, help="Folder of rule files (*.yml)."),
    data_dir: Path | None = typer.Option(None, help="Prometheus data (default: a temp dir)."),
    scrape_interval: float = typer.Option(
        5.0, "--scrape-interval-s", help="Seconds between scrapes."
    ),
) -> None:
    """Start Prometheus against a running server (sentiserve or Triton) with the recording
    and alerting rules, print the URL of its graph page, and run until Ctrl-C."""
    from sentiserve.monitoring import prometheus as monitoring

    with user_errors(), tempfile.TemporaryDirectory(prefix="sentiserve-prometheus-") as tmp:
        workdir = data_dir or Path(tmp)
        running = monitoring.start(
            target, workdir, port=port, rules=rules, scrape_s=scrape_interval
        )
        console.print(
            f"[green]prometheus ready[/]: {running.url}/graph  (alerts: {running.url}/alerts, "
            f"rules: {running.url}/rules); scraping {', '.join(target)}; Ctrl-C to stop"
        )
        interrupt_on_sigterm()
        try:
            running.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            running.stop()
