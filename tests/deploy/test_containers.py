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
from sentiserve.local.ready import is_ready, wait_until
from sentiserve.repository.stores.s3 import publish
from tests.deploy.pods import (
    CHART,
    DOCKER,
    NETWORK,
    InitFailedError,
    Pod,
    docker,
    engine,
    gateway_address,
    pod_of,
    quantity_bytes,
    render,
    start,
)
from tests.integration.serving import Running, start_server, stop
from tests.integration.test_s3 import CREDENTIALS, Moto

IMAGE = f"sentiserve:{__version__}"
SCORE_IMAGE = f"sentiserve-score:{__version__}"
VALUES_GPU = CHART / "values-eks-gpu.yaml"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess", "fine"]


def engine_missing() -> str | None:
    """Why no container engine can run here (None: one can)."""
    if os.environ.get("DOCKER_HOST") and docker("version", check=False).returncode == 0:
        return None
    if not Path("/usr/sbin/dockerd").exists() or not Path(DOCKER).exists():
        return "needs Docker's engine (Debian's docker.io: `make system`)"
    if os.geteuid() != 0:
        return "needs root to start a private Docker daemon (or DOCKER_HOST set to one)"
    return None


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    reason = engine_missing()
    if reason is not None:
        pytest.skip(reason)
    for host in engine():
        missing = [
            i for i in (IMAGE, SCORE_IMAGE) if docker("image", "inspect", i, check=False).returncode
        ]
        assert not missing, f"images {missing} are missing: run `make images`"
        yield host


@pytest.fixture(scope="module")
def repository_in_s3(docker_host: str, tiny_build: Path) -> Iterator[tuple[Moto, str]]:
    """The tiny repository (its python form) in S3 on a moto server that the host and the
    containers reach (those on the test network through the host's address there)."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    moto = Moto(host="0.0.0.0")  # noqa: S104 - the containers reach it through the bridge
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

        prober = httpx.Client(timeout=startup["timeoutSeconds"])

        def ready() -> bool:
            state = json.loads(docker("inspect", run.name).stdout)[0]["State"]
            assert state["Running"], (
                f"the container exited: {docker('logs', run.name, check=False).stderr[-2000:]}"
            )
            try:
                return prober.get(run.probe_url("startupProbe")).status_code == 200
            except httpx.HTTPError:
                return False

        with prober:
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
        # The memory limit holds under load: the container's peak so far (its cgroup's
        # high-water mark, kept by the kernel) against the chart's limit.
        peak = peak_memory_bytes(run.name)
        limit = quantity_bytes(container["resources"]["limits"]["memory"])
        assert 0 < peak < limit, f"peak {peak / 2**20:.0f} MiB, limit {limit / 2**20:.0f} MiB"
        docker("stop", "--time", str(run.grace_s), run.name, timeout=run.grace_s + 30)
        for thread in threads:
            thread.join(60)
        assert answers == [200] * len(threads), answers
        state: dict[str, Any] = json.loads(docker("inspect", run.name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, docker("logs", run.name, check=False).stderr[-2000:]
        assert state["OOMKilled"] is False
    finally:
        docker("rm", "--force", run.name, check=False)


def peak_memory_bytes(name: str) -> int:
    """The highest memory use of container ``name`` so far, from its cgroup (v1's
    max_usage_in_bytes or v2's memory.peak) under the host's /sys/fs/cgroup."""
    cid = docker("inspect", "--format", "{{.Id}}", name).stdout.strip()
    root = Path("/sys/fs/cgroup")
    for pattern in (f"memory/**/{cid}/memory.max_usage_in_bytes", f"**/*{cid}*/memory.peak"):
        for found in root.glob(pattern):
            return int(found.read_text())
    raise AssertionError(f"no memory cgroup found for container {name} ({cid[:12]})")


def test_the_serving_image_stays_small_and_has_no_installer(docker_host: str) -> None:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    assert size <= 400e6, f"{IMAGE} is {size / 1e6:.0f} MB; the target is 400 MB"
    # What was trimmed is not needed: everything serving imports still loads, S3 and STS
    # clients (IRSA) still build, and nothing can be installed at run time.
    code = (
        "import importlib.util, boto3, numpy, onnxruntime, tokenizers, grpc, uvloop, aiohttp,"
        " tritonclient.grpc.aio, sentiserve.serve.app, sentiserve.serve.grpc_v2;"
        "boto3.client('s3', region_name='us-east-1'); boto3.client('sts', region_name='us-east-1');"
        "print(numpy.ones(4) @ numpy.ones(4), importlib.util.find_spec('pip'))"
    )
    done = docker("run", "--rm", "--read-only", "--entrypoint", "python", IMAGE, "-c", code)
    assert done.stdout.split() == ["4.0", "None"]


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


TRITON_IMAGE = f"sentiserve-triton:cpu-{__version__}"
TRITON_SERVICE = "t-sentiserve-triton.default.svc.cluster.local"


def gpu_values_pods(url: str, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The GPU values' Triton pod and gateway pod, pulling from ``url`` at ``endpoint``."""
    objects = render(
        "--api-versions-monitoring",
        f"model.s3Url={url}",
        f"string:model.s3Env.AWS_ENDPOINT_URL={endpoint}",
        f"string:model.s3Env.AWS_ACCESS_KEY_ID={CREDENTIALS['AWS_ACCESS_KEY_ID']}",
        f"string:model.s3Env.AWS_SECRET_ACCESS_KEY={CREDENTIALS['AWS_SECRET_ACCESS_KEY']}",
        values=VALUES_GPU,
    )
    return pod_of(objects, "Deployment", "sentiserve-triton"), pod_of(
        objects, "Deployment", "t-sentiserve"
    )


def test_the_gpu_topology_runs_on_the_cpu_stand_in(
    repository_in_s3: tuple[Moto, str], host_server: Running
) -> None:
    """The GPU values' pods as rendered (Triton with its pull init container, twice, behind
    the Service name; the gateway pointed at it), with the CPU stand-in for NVIDIA's Triton
    image serving the python form: the same answers, calls spread over both Tritons, and the
    gateway keeps answering when one is killed under load."""
    moto, url = repository_in_s3
    pods: list[Pod] = []
    try:
        endpoint = f"http://{gateway_address_started()}:{moto.port}"
        triton_pod, gateway_pod = gpu_values_pods(url, endpoint)
        images = {"pull": IMAGE, "triton": TRITON_IMAGE, "server": IMAGE}
        for i in range(2):
            pods.append(Pod(f"sentiserve-test-triton-{i}", triton_pod, images, (TRITON_SERVICE,)))
        pods.append(Pod("sentiserve-test-gateway", gateway_pod, images))
        for pod in pods:
            pod.start()
        tritons, gateway = pods[:2], pods[2]
        (triton,) = [c for c in triton_pod["containers"] if c["name"] == "triton"]
        startup = triton["startupProbe"]
        budget = startup["failureThreshold"] * startup["periodSeconds"]
        for pod in tritons:
            # Ready within the chart's startup probe budget (failureThreshold x period), and
            # every probe answers within its own timeout.
            def probe(kind: str, address: str = pod.address()) -> bool:
                get = triton[kind]["httpGet"]
                port = {p["name"]: p["containerPort"] for p in triton["ports"]}.get(
                    get["port"], get["port"]
                )
                url = f"http://{address}:{port}{get['path']}"
                try:
                    return httpx.get(url, timeout=triton[kind]["timeoutSeconds"]).status_code == 200
                except httpx.HTTPError:
                    return False

            assert wait_until(lambda: probe("startupProbe"), budget, interval_s=0.5), (
                f"Triton not ready within its startup probe's {budget} s"
            )
            assert probe("readinessProbe"), "readiness probe"
            assert probe("livenessProbe"), "liveness probe"
        base = f"http://{gateway.address()}:8000"
        assert wait_until(lambda: is_ready(base), 60, interval_s=0.2), "gateway not ready"

        labels, probs = probabilities(base, TEXTS)
        want_labels, want = probabilities(host_server.url, TEXTS)
        assert labels == want_labels
        assert float(np.abs(probs - want).max()) <= 1e-4
        with httpx.Client(timeout=10) as client:
            for _ in range(40):
                answer = client.post(f"{base}/v1/sentiment", json={"text": TEXTS[0]})
                assert answer.status_code == 200
        counts = [_inference_count(f"http://{p.address()}:8002/metrics") for p in tritons]
        assert all(c > 0 for c in counts), f"calls were not spread over both Tritons: {counts}"

        # Kill one Triton under load: the gateway keeps answering from the other.
        results: list[int] = []
        stop_at = time.monotonic() + 6

        def load() -> None:
            with httpx.Client(timeout=10) as client:
                while time.monotonic() < stop_at:
                    try:
                        r = client.post(f"{base}/v1/sentiment", json={"text": TEXTS[1]})
                        results.append(r.status_code)
                    except httpx.HTTPError:
                        results.append(0)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.5)
        docker("kill", f"{tritons[1].name}-triton", tritons[1].pause)
        killed_at = len(results)
        thread.join(30)
        after = results[killed_at + 10 :]
        assert after, "no requests after the kill"
        assert all(code == 200 for code in after), f"failures well after the kill: {after}"
        assert results.count(200) >= 0.9 * len(results), results
    finally:
        for pod in pods:
            pod.remove()


def test_a_corrupted_object_fails_the_pull_and_triton_never_starts(
    repository_in_s3: tuple[Moto, str], tiny_build: Path
) -> None:
    moto, _ = repository_in_s3
    s3 = boto3.client("s3", endpoint_url=moto.url)
    publish(tiny_build / "model_repository", "s3://models/corrupt", endpoint_url=moto.url)
    key = next(
        o["Key"]
        for o in s3.list_objects_v2(Bucket="models", Prefix="corrupt/")["Contents"]
        if o["Key"].endswith("tokenizer.json")
    )
    s3.put_object(Bucket="models", Key=key, Body=b"{}")
    endpoint = f"http://{gateway_address_started()}:{moto.port}"
    triton_pod, _ = gpu_values_pods("s3://models/corrupt", endpoint)
    pod = Pod("sentiserve-test-corrupt", triton_pod, {"pull": IMAGE, "triton": TRITON_IMAGE})
    try:
        with pytest.raises(InitFailedError, match="tokenizer.json"):
            pod.start()
        assert docker("inspect", f"{pod.name}-triton", check=False).returncode != 0, "Triton ran"
    finally:
        pod.remove()


def gateway_address_started() -> str:
    if docker("network", "inspect", NETWORK, check=False).returncode:
        docker("network", "create", NETWORK)
    return gateway_address()


def _inference_count(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_count{")
    )
