"""``sentiserve triton``: the real Triton Inference Server (bundled binary) over a repository."""

from __future__ import annotations

from pathlib import Path

import typer

from sentiserve.cli.console import console, current_settings, interrupt_on_sigterm, user_errors
from sentiserve.repository.layout import DEFAULT_ROOT
from sentiserve.repository.stores import open_repository
from sentiserve.triton.environment import DEFAULT_HOME


def triton(
    model_repository: str = typer.Option(
        str(DEFAULT_ROOT),
        envvar="SENTISERVE_MODEL_REPOSITORY",
        help="Model repository: a folder, or s3://bucket/prefix (pulled and verified first).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address Triton's endpoints bind."),
    http_port: int = typer.Option(8000, help="KServe v2 REST port."),
    grpc_port: int = typer.Option(8001, help="KServe v2 gRPC port."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (nv_* metrics)."),
    model_control_mode: str = typer.Option("none", help="Triton's none, poll or explicit."),
    prepare: bool = typer.Option(
        True, help="Write the python form (config.pbtxt, model.py) of every model first."
    ),
    max_batch_size: int = typer.Option(64, help="Python form: most texts per execution."),
    instances: int = typer.Option(1, help="Python form: model instances (processes)."),
    home: Path = typer.Option(
        DEFAULT_HOME,
        envvar="SENTISERVE_TRITON_HOME",
        help="Triton's own environment (bundled server, numpy<2 for its python stub).",
    ),
    setup_only: bool = typer.Option(False, help="Create Triton's environment, then exit."),
    exit_timeout: int = typer.Option(
        10, "--exit-timeout-s", help="Seconds Triton waits for clients when stopping."
    ),
    log_verbose: int = typer.Option(0, help="Triton's --log-verbose level."),
) -> None:
    """Run the real NVIDIA Triton Inference Server (2.51, bundled in nvidia-pytriton, python
    backend, CPU) over the model repository. Ready is Triton's own /v2/health/ready.

    The first run creates Triton's environment (about 500 MB from PyPI).
    """
    from sentiserve.errors import ConfigError
    from sentiserve.repository.layout import CONFIG, ModelRepository
    from sentiserve.repository.triton import is_gpu_form, write_python_form
    from sentiserve.repository.triton_configs import TritonBatching
    from sentiserve.triton.environment import TritonEnvironment
    from sentiserve.triton.server import TritonServer

    with user_errors():
        environment = TritonEnvironment(home)
        if not environment.ready():
            with console.status("setting up Triton's environment (first run only)"):
                environment.create(say=lambda m: console.print(f"[cyan]•[/] {m}"))
        if setup_only:
            console.print(f"Triton's environment is ready in {home}")
            return
        repository = open_repository(model_repository, current_settings().cache_dir).local()
        if prepare:
            batching = TritonBatching(max_batch_size=max_batch_size, instances=instances)
            for name in ModelRepository(repository).servable():
                if is_gpu_form((repository / name / CONFIG).read_text()):
                    raise ConfigError(
                        f"{name} is in the GPU form (an ensemble over onnxruntime/tensorrt), "
                        "which the bundled Triton cannot run (python backend only); run it in "
                        "the official Triton container, or rewrite it with `sentiserve "
                        f"repository form --platform python --model {name}`"
                    )
                write_python_form(repository, name, batching)
                console.print(f"[cyan]•[/] {name}: python form written (dynamic batching)")
        server = TritonServer(
            environment,
            str(repository.resolve()),
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            model_control_mode=model_control_mode,
            log_verbose=log_verbose,
            exit_timeout=exit_timeout,
        )

    # Installed before Triton starts: a SIGTERM while it loads stops it cleanly too.
    interrupt_on_sigterm()
    code = 0
    try:
        with user_errors():
            server.start()
        console.print(
            f"[green]ready[/]: Triton {server.url}/v2  gRPC {server.grpc_url}  "
            f"metrics {server.metrics_url}",
            soft_wrap=True,
        )
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        server.stop()
    if code:
        console.print(f"[red]error[/]: tritonserver exited with {code}")
        raise typer.Exit(1)
