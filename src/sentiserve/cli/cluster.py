"""``sentiserve cluster-local``: N serving replicas behind HAProxy on 127.0.0.1."""

from __future__ import annotations

import typer

from sentiserve.cli.console import console, interrupt_on_sigterm, user_errors
from sentiserve.repository.layout import DEFAULT_ROOT


def cluster_local(
    model_repository: str = typer.Option(
        str(DEFAULT_ROOT), help="Model repository every replica serves."
    ),
    replicas: int = typer.Option(2, min=1, help="Number of `sentiserve serve` replicas."),
    port: int = typer.Option(8080, help="HAProxy's port (on 127.0.0.1)."),
    threads: int = typer.Option(1, min=1, help="Engine threads per replica."),
) -> None:
    """A local rehearsal of scale-out: replicas on free ports behind HAProxy, which checks
    their readiness every 500 ms and retries a failed request on another replica. Runs until
    Ctrl-C."""
    from sentiserve.local.cluster import LocalCluster

    with user_errors():
        cluster = LocalCluster(
            model_repository, replicas, port, extra=("--threads", str(threads))
        ).start()
    ports = ", ".join(str(http) for _, http in cluster.replicas)
    console.print(
        f"[green]ready[/]: {cluster.url}/v1/sentiment -> replicas on ports {ports}; Ctrl-C to stop",
        soft_wrap=True,
    )
    interrupt_on_sigterm()
    try:
        if cluster.balancer is not None:
            cluster.balancer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
