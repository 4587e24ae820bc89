"""``sentiserve repository``: write and inspect model repositories."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from sentiserve import DEFAULT_MODEL
from sentiserve.cli.console import console, emit_json, engines_line, user_errors
from sentiserve.engine.tokenizer import Truncation
from sentiserve.repository.layout import DEFAULT_ROOT
from sentiserve.repository.triton_configs import Platform, TritonBatching

TB = TritonBatching

HELP = "Write, inspect, publish and pull model repositories (Triton layout)."


def build(
    from_dir: Path = typer.Option(
        Path("build"), "--from", help="Build folder with model/ and optimized/."
    ),
    out: Path = typer.Option(
        DEFAULT_ROOT, "--out", "--model-repository", help="Model repository root."
    ),
    name: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name in the repository."),
    truncation: Truncation = typer.Option(Truncation.HEAD_TAIL, help="Long-text policy."),
    platform: Platform = typer.Option(
        Platform.PYTHON,
        help="Triton form: python (CPU, bundled Triton) or the GPU ensemble "
        "over onnxruntime or tensorrt (official Triton container).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Write a new, verified version of NAME from a build folder (atomically), in the form
    Triton serves on PLATFORM. The embedded server reads every form."""
    from sentiserve.repository.from_build import write_from_build
    from sentiserve.repository.triton import write_form

    with user_errors():
        version = write_from_build(from_dir, out, name, truncation=truncation)
        written = write_form(out, name, platform)
    if json_out:
        emit_json(
            {
                "path": str(version.path),
                "model": name,
                "version": version.manifest.version,
                "default_engine": version.manifest.default_engine,
                "platform": platform.value,
                "models": [c.name for c in written],
            }
        )
        return
    console.print(
        f"wrote [bold]{version.path}[/] (default engines {version.manifest.default_engine}); "
        f"Triton form {platform.value}: {', '.join(c.name for c in written)}"
    )


def form(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name."),
    platform: Platform = typer.Option(..., help="python, onnxruntime or tensorrt."),
    max_batch_size: int = typer.Option(TB.max_batch_size, help="Most texts per execution."),
    preferred_batch_sizes: str = typer.Option(
        ",".join(map(str, TB.preferred_batch_sizes)), help="GPU model: preferred batch sizes."
    ),
    delay_us: int = typer.Option(TB.delay_us, help="GPU model: max_queue_delay_microseconds."),
    instances: int = typer.Option(TB.instances, help="Instances per model."),
    trt_fp16: bool = typer.Option(
        TB.trt_fp16, help="onnxruntime: ONNX Runtime's TensorRT accelerator in fp16."
    ),
    show_config: bool = typer.Option(False, "--show", help="Print every config.pbtxt written."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """(Re)write MODEL's Triton form from its newest version, without a new version: its
    config.pbtxt files are generated from typed config and checked (ensemble wiring, dims
    against the ONNX graph) before anything is written."""
    from sentiserve.errors import ConfigError
    from sentiserve.repository.triton import write_form

    with user_errors():
        try:
            sizes = tuple(int(s) for s in preferred_batch_sizes.split(",") if s.strip())
        except ValueError as exc:
            raise ConfigError(f"--preferred-batch-sizes: {preferred_batch_sizes!r}") from exc
        batching = TritonBatching(
            max_batch_size=max_batch_size,
            preferred_batch_sizes=sizes,
            delay_us=delay_us,
            instances=instances,
            trt_fp16=trt_fp16,
        )
        written = write_form(model_repository, model, platform, batching)
    if json_out:
        paths = [str(model_repository / c.name / "config.pbtxt") for c in written]
        emit_json({"platform": platform.value, "configs": paths})
        return
    for config in written:
        console.print(f"[cyan]•[/] {model_repository / config.name / 'config.pbtxt'}")
        if show_config:
            typer.echo(config.to_pbtxt())


def rollout(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name."),
    policy: str | None = typer.Option(
        None, help="Versions to serve: latest[:N], specific:A,B or all (Triton's version_policy)."
    ),
    split: str | None = typer.Option(
        None,
        help="Weights of the versions answering requests that name none, such as 3=90,4=10 "
        '("": the newest version alone).',
    ),
    shadow: int | None = typer.Option(
        None, help="A version that gets a copy of those requests; its answers are only compared."
    ),
    no_shadow: bool = typer.Option(False, "--no-shadow", help="Stop copying to a shadow."),
    json_out: bool = typer.Option(False, "--json", help="Print a one-line JSON summary."),
) -> None:
    """Set which versions of MODEL serve and how they share its traffic (a canary split, a
    shadow), in its config.pbtxt; what is not given stays. Checked against the repository's
    versions before anything is written; a server applies it when the model is reloaded
    (POST /v2/repository/models/MODEL/load) or restarted, Triton with its own reload."""
    from sentiserve.errors import ConfigError
    from sentiserve.repository.layout import CONFIG, ModelRepository
    from sentiserve.repository.rollout import (
        Rollout,
        VersionPolicy,
        parse_split,
        read_rollout,
        write_rollout,
    )
    from sentiserve.repository.triton import is_gpu_form

    with user_errors():
        repository = ModelRepository(model_repository)
        repository.load(model, verify=False)  # a clear error for an unknown model
        path = model_repository / model / CONFIG
        if is_gpu_form(path.read_text()):
            raise ConfigError(
                f"{model} is in the GPU form, whose ensemble serves its members' newest "
                "version; rollouts need the python form (sentiserve repository form)"
            )
        if no_shadow and shadow is not None:
            raise ConfigError("give --shadow or --no-shadow, not both")
        old = read_rollout(path)
        new = Rollout(
            VersionPolicy.parse(policy) if policy is not None else old.policy,
            parse_split(split) if split is not None else old.split,
            None if no_shadow else shadow if shadow is not None else old.shadow,
        )
        loaded = new.policy.select(repository.versions(model))
        weights = new.weights(loaded)
        labels = {tuple(repository.load(model, v, verify=False).manifest.labels) for v in loaded}
        write_rollout(path, new)
    if len(labels) > 1:
        console.print(
            f"[yellow]warning:[/] versions {loaded} of {model} name their labels differently; "
            "the embedded server answers each with its own, but through Triton the gateway "
            "reads one label list per model (the newest version's)",
            highlight=False,
        )
    summary = {
        "model": model,
        "policy": str(new.policy),
        "versions": loaded,
        "split": {str(v): w for v, w in weights.items()},
        "shadow": new.shadow,
    }
    if json_out:
        emit_json(summary)
        return
    total = sum(weights.values())
    shares = ", ".join(f"v{v} {100 * w / total:.4g}%" for v, w in weights.items())
    console.print(f"[cyan]•[/] {model}: serves versions {loaded} ({new.policy})")
    console.print(f"[cyan]•[/] requests that name no version: {shares}")
    if new.shadow is not None:
        console.print(f"[cyan]•[/] shadow: v{new.shadow} gets a copy of them")
    console.print(f"[dim]written to {path}; reload the model to apply it[/]")


def show(
    model_repository: Path = typer.Option(DEFAULT_ROOT, help="Model repository root."),
    model: str = typer.Option(DEFAULT_MODEL, "--model-name", help="Model name."),
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
        table.add_row(
            name,
            e.file,
            f"{e.bytes / 1e6:.1f}",
            f"{ev.get('accuracy', nan):.4f}",
            f"{ev.get('max_batch_delta', nan):.1e}",
            str(ev.get("eligible", "-")),
        )
    console.print(table)
    console.print(engines_line(m.default_engine))
