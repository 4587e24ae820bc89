"""The one-machine stack (deploy/compose/compose.yaml, `make stack`): brought up with
docker-compose on the private daemon, it answers a prediction through the gateway (equal to
the host's embedded server), Prometheus scrapes every target and evaluates the chart's
rules, the load job finishes, and `down` removes everything. Needs what the container tests
need (root or DOCKER_HOST, the images from `make images`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from sentiserve import __version__
from sentiserve.local.ready import free_port, is_ready, wait_until
from tests.deploy.pods import ROOT, docker, engine
from tests.deploy.test_containers import engine_missing, probabilities
from tests.integration.serving import Running, start_server, stop

COMPOSE = ROOT / "deploy" / "compose"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess"]


def compose(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``docker-compose`` on the stack's file, as the test's project."""
    return subprocess.run(
        ["docker-compose", "-p", "sentiserve-test", *args],
        cwd=COMPOSE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def stack(tiny_build: Path) -> Iterator[dict[str, int]]:
    reason = engine_missing() or (
        None if shutil.which("docker-compose") else "needs docker-compose"
    )
    if reason is not None:
        pytest.skip(reason)
    ports = {
        "GATEWAY_PORT": free_port(),
        "GATEWAY_METRICS_PORT": free_port(),
        "PROMETHEUS_PORT": free_port(),
    }
    for _host in engine():
        missing = [
            image
            for image in (
                "sentiserve",
                "sentiserve-s3",
                "sentiserve-prometheus",
                "sentiserve-triton",
            )
            if docker(
                "image",
                "inspect",
                f"{image}:{'cpu-' if image.endswith('triton') else ''}{__version__}",
                check=False,
            ).returncode
        ]
        assert not missing, f"images missing: {missing}: run `make images`"
        env = {
            **os.environ,
            **{k: str(v) for k, v in ports.items()},
            "MODEL_REPOSITORY": str(tiny_build / "model_repository"),
            "SENTISERVE_VERSION": __version__,
            "LOAD_SECONDS": "5",  # long enough for the rules to see the load
        }
        run = partial(compose, env)
        try:
            up = run("up", "-d")
            assert up.returncode == 0, up.stderr[-3000:]
            yield {**ports, "run": run}  # type: ignore[dict-item]
        finally:
            down = run("down", "--volumes", "--remove-orphans")
            assert down.returncode == 0, down.stderr[-2000:]
            left = docker(
                "ps", "-a", "--filter", "label=com.docker.compose.project=sentiserve-test", "-q"
            )
            assert left.stdout.strip() == "", "containers left after down"


@pytest.fixture(scope="module")
def host_server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository")
    yield running
    stop(running)


def test_the_stack_serves_scrapes_and_evaluates_the_rules(
    stack: dict[str, int], host_server: Running
) -> None:
    gateway = f"http://127.0.0.1:{stack['GATEWAY_PORT']}"

    assert wait_until(lambda: is_ready(gateway), 240, interval_s=1), "the gateway is not ready"
    labels, probs = probabilities(gateway, TEXTS)
    want_labels, want = probabilities(host_server.url, TEXTS)
    assert labels == want_labels
    assert float(np.abs(probs - want).max()) <= 1e-4

    # The load job runs against the gateway and finishes.
    run = stack["run"]  # type: ignore[index]

    def load_done() -> bool:
        state = run("ps", "-q", "load").stdout.strip()
        if not state:
            return False
        info = json.loads(docker("inspect", state).stdout)[0]["State"]
        return not info["Running"] and info["Status"] == "exited"

    assert wait_until(load_done, 120, interval_s=1), "the load job did not finish"
    load_id = run("ps", "-q", "load").stdout.strip()
    assert json.loads(docker("inspect", load_id).stdout)[0]["State"]["ExitCode"] == 0, docker(
        "logs", load_id, check=False
    ).stderr[-1500:]

    prometheus = f"http://127.0.0.1:{stack['PROMETHEUS_PORT']}"

    def targets_up() -> bool:
        try:
            doc = httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        active = doc["data"]["activeTargets"]
        return len(active) == 3 and all(t["health"] == "up" for t in active)

    assert wait_until(targets_up, 60, interval_s=1), "Prometheus does not scrape every replica"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert rules, "the chart's rules are loaded"
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), "a rule fails to evaluate"

    def recorded() -> bool:
        query = {"query": "sentiserve:requests:rate1m"}
        result = httpx.get(f"{prometheus}/api/v1/query", params=query, timeout=5).json()
        return any(float(s["value"][1]) > 0 for s in result["data"]["result"])

    assert wait_until(recorded, 60, interval_s=2), "the request-rate rule records nothing"
