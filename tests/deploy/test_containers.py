"""The images `make images` builds, run as the chart runs them: the CPU pod's container with
exactly its rendered command, args, env, ports, securityContext, emptyDir volumes and
limits (tests/deploy/pods.py turns the spec into `docker run` flags), pulling its model
repository from a real S3-compatible server (moto) as on EKS; and the scoring image running
`sentiserve score`. Needs root (a private Docker daemon, deploy/docker/engine.sh) and the
images (`make images`; `make test` builds them first)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest

from sentiserve import __version__
from sentiserve.local.ready import wait_until
from sentiserve.repository.stores.s3 import publish
from tests.deploy.pods import docker, engine, pod_of, render, start
from tests.integration.serving import Running, start_server, stop
from tests.integration.test_s3 import CREDENTIALS, Moto

IMAGE = f"sentiserve:{__version__}"
SCORE_IMAGE = f"sentiserve-score:{__version__}"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess", "fine"]


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    for host in engine():
        missing = [
            i for i in (IMAGE, SCORE_IMAGE) if docker("image", "inspect", i, check=False).returncode
        ]
        assert not missing, f"images {missing} are missing: run `make images`"
        yield host


@pytest.fixture(scope="module")
def repository_in_s3(tiny_build: Path) -> Iterator[tuple[Moto, str]]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    moto = Moto()
    try:
        boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket="models")
        publish(tiny_build / "model_repository", "s3://models/repo", endpoint_url=moto.url)
        yield moto, "s3://models/repo"
    finally:
        moto.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def host_server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository")
    yield running
    stop(running)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def probabilities(url: str, texts: list[str]) -> tuple[list[str], np.ndarray]:
    body = httpx.post(f"{url}/v1/sentiment", json={"texts": texts}, timeout=30).json()
    results = body["results"]
    labels = sorted(results[0]["scores"])
    return [r["label"] for r in results], np.array(
        [[r["scores"][k] for k in labels] for r in results]
    )


def v2_probabilities(url: str, texts: list[str]) -> np.ndarray:
    tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1], "data": texts}
    doc = httpx.post(
        f"{url}/v2/models/sentiment/infer", json={"inputs": [tensor]}, timeout=30
    ).json()
    out = next(o for o in doc["outputs"] if o["name"] == "PROBABILITIES")
    return np.array(out["data"]).reshape(out["shape"])


def grpc_probabilities(target: str, texts: list[str]) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(target)
    try:
        tensor = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(
            np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)
        )
        result = client.infer("sentiment", [tensor])
        probs: np.ndarray = result.as_numpy("PROBABILITIES")
        return probs
    finally:
        client.close()


def test_the_cpu_pod_runs_as_the_chart_renders_it(
    docker_host: str, repository_in_s3: tuple[Moto, str], host_server: Running
) -> None:
    moto, url = repository_in_s3
    objects = render(
        f"model.s3Url={url}",
        f"string:model.s3Env.AWS_ENDPOINT_URL={moto.url}",
        f"string:model.s3Env.AWS_ACCESS_KEY_ID={CREDENTIALS['AWS_ACCESS_KEY_ID']}",
        f"string:model.s3Env.AWS_SECRET_ACCESS_KEY={CREDENTIALS['AWS_SECRET_ACCESS_KEY']}",
    )
    pod = pod_of(objects, "Deployment", "sentiserve")
    (container,) = [c for c in pod["containers"] if c["name"] == "server"]
    assert container["image"].rsplit("/", 1)[-1] == IMAGE, "the chart deploys this image"
    ports = [p["containerPort"] for p in container["ports"]]
    busy = [p for p in ports if not port_free(p)]
    assert not busy, f"ports {busy} are taken on this machine; the pod's ports are the host's here"

    started = time.monotonic()
    run = start("sentiserve-test-cpu-pod", IMAGE, container, pod)
    try:
        startup = container["startupProbe"]
        budget = startup["failureThreshold"] * startup["periodSeconds"]

        def ready() -> bool:
            state = json.loads(docker("inspect", run.name).stdout)[0]["State"]
            assert state["Running"], (
                f"the container exited: {docker('logs', run.name, check=False).stderr[-2000:]}"
            )
            try:
                return (
                    httpx.get(
                        run.probe_url("startupProbe"), timeout=startup["timeoutSeconds"]
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        assert wait_until(ready, budget, interval_s=0.2), (
            "not ready within the startup probe's budget"
        )
        assert time.monotonic() - started < budget
        for probe in ("readinessProbe", "livenessProbe"):
            timeout = container[probe]["timeoutSeconds"]
            assert httpx.get(run.probe_url(probe), timeout=timeout).status_code == 200, probe

        # The same answers as the host's embedded server, over v1, v2 REST and gRPC.
        base = "http://127.0.0.1:8000"
        labels, probs = probabilities(base, TEXTS)
        want_labels, want = probabilities(host_server.url, TEXTS)
        assert labels == want_labels
        assert float(np.abs(probs - want).max()) <= 1e-4
        assert (
            float(
                np.abs(
                    v2_probabilities(base, TEXTS) - v2_probabilities(host_server.url, TEXTS)
                ).max()
            )
            <= 1e-4
        )
        ours = grpc_probabilities("127.0.0.1:8001", TEXTS)
        theirs = grpc_probabilities(f"127.0.0.1:{host_server.grpc_port}", TEXTS)
        assert float(np.abs(ours - theirs).max()) <= 1e-4

        # Non-root, a read-only root, nothing written outside its emptyDirs.
        assert docker("exec", run.name, "id", "-u").stdout.strip() == str(
            pod["securityContext"]["runAsUser"]
        )
        assert docker("exec", run.name, "touch", "/opt/x", check=False).returncode != 0
        assert docker("diff", run.name).stdout.strip() == ""

        # SIGTERM with the pod's grace period drains in-flight requests: none fails.
        answers: list[int | str] = []

        def client() -> None:
            try:
                r = httpx.post(f"{base}/v1/sentiment", json={"texts": TEXTS * 16}, timeout=60)
                answers.append(r.status_code)
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)

        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        docker("stop", "--time", str(run.grace_s), run.name, timeout=run.grace_s + 30)
        for thread in threads:
            thread.join(60)
        assert answers == [200] * len(threads), answers
        state: dict[str, Any] = json.loads(docker("inspect", run.name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, docker("logs", run.name, check=False).stderr[-2000:]
        assert state["OOMKilled"] is False
    finally:
        docker("rm", "--force", run.name, check=False)


def test_the_scoring_image_scores_like_the_host(
    docker_host: str, tiny_build: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in TEXTS * 5))
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    done = docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{tiny_build / 'model_repository'}:/models:ro",
        "--volume",
        f"{data}:/data:ro",
        "--volume",
        f"{out}:/out",
        "--entrypoint",
        "sentiserve",
        SCORE_IMAGE,
        "score",
        "/data/in.csv",
        "/out/scored.jsonl",
        "--model-repository",
        "/models",
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ray = docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        SCORE_IMAGE,
        "-c",
        "import ray, pyarrow; print(ray.__version__)",
        check=False,
    )
    assert ray.returncode == 0, "the scoring image has ray and pyarrow (the RayJob's)"
    rows = [json.loads(line) for line in (out / "scored.jsonl").read_text().splitlines()]
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    served = open_model(ModelRepository(tiny_build / "model_repository").load("sentiment"))
    texts = TEXTS * 5
    want = served.probabilities([texts[int(r["id"])] for r in rows])
    assert [r["label"] for r in rows] == [served.labels[i] for i in want.argmax(axis=1)]
    got = np.array([[r[f"p_{name}"] for name in served.labels] for r in rows])
    assert float(np.abs(got - want).max()) <= 1e-4
