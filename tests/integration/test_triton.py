"""The real Triton Inference Server (2.51, bundled in nvidia-pytriton) over generated
repositories: both protocols through tritonclient, parity with the embedded server, Triton's
own batching metrics, the GPU ensemble's wiring, the gateway mode, and clean shutdown.

Triton runs in its own environment (``.triton/``, made by ``make triton``; made here if
missing, which needs PyPI).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from sentiserve.local.ready import free_port, is_ready, serve_command, wait_until
from sentiserve.repository.layout import CONFIG, ModelRepository
from sentiserve.repository.triton import write_gpu_form, write_python_form
from sentiserve.repository.triton_configs import Platform
from sentiserve.triton.environment import TritonEnvironment, TritonUnavailableError
from sentiserve.triton.model_config import read_config
from sentiserve.triton.server import SHM_PREFIX, TritonServer, shm_regions
from tests.conftest import toy_texts
from tests.integration.serving import Running, start_server, stop

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
REVIEWS = [
    "A wonderful, moving film with a brilliant cast.",
    "Dull and tedious; the plot is a mess and the acting is bad.",
    "ok",
    "It was fun. " * 120,  # longer than max_length: the long-text policy applies
    "Ünïcödé review — great fun 🎬",
]


def texts() -> list[str]:
    return REVIEWS + [t for t, _ in toy_texts(59, seed=11)]


def copy_repository(tiny_build: Path, target: Path) -> Path:
    shutil.copytree(tiny_build / "model_repository", target)
    return target


def start_triton(
    env: TritonEnvironment, repo: Path, log: Path, otlp_url: str | None = None
) -> TritonServer:
    """A started Triton on free ports (tracing to ``otlp_url``, if given).

    Triton's python backend sometimes aborts on a ``boost::interprocess::lock_exception``
    while its stubs start on a busy machine (an upstream fault:
    triton-inference-server/server#8882): such a start is tried once more, and any other
    failure fails at once."""
    for attempt in (1, 2):
        server = TritonServer(
            env,
            str(repo),
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_file=log,
            exit_timeout=5,
            otlp_url=otlp_url,
        )
        try:
            server.start()
        except TritonUnavailableError as exc:
            if attempt == 2 or "interprocess::lock_exception" not in str(exc):
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def python_repo(tiny_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repository(tiny_build, tmp_path_factory.mktemp("triton-py") / "repo")
    write_python_form(repo, "sentiment")
    return repo


@pytest.fixture(scope="module")
def triton(environment: TritonEnvironment, python_repo: Path) -> Iterator[TritonServer]:
    server = start_triton(environment, python_repo, python_repo.parent / "triton.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded(python_repo: Path) -> Iterator[Running]:
    running = start_server(python_repo)
    yield running
    stop(running)


def embedded_answer(running: Running, batch: list[str]) -> tuple[list[str], np.ndarray]:
    body = httpx.post(f"{running.url}/v1/sentiment", json={"texts": batch}, timeout=30).json()
    labels = [r["label"] for r in body["results"]]
    probs = np.array([[r["scores"][k] for k in sorted(r["scores"])] for r in body["results"]])
    return labels, probs


def column(batch: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in batch], dtype=np.object_).reshape(-1, 1)


def triton_answer(result: object) -> tuple[list[str], np.ndarray]:
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]  # type: ignore[attr-defined]
    return labels, result.as_numpy("PROBABILITIES")  # type: ignore[attr-defined]


def assert_same(ours: tuple[list[str], np.ndarray], theirs: tuple[list[str], np.ndarray]) -> None:
    assert ours[0] == theirs[0]
    assert ours[1].shape == theirs[1].shape
    assert float(np.abs(ours[1] - theirs[1]).max()) <= 1e-4


def test_http_and_grpc_answer_like_the_embedded_server(
    triton: TritonServer, embedded: Running
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    batch = texts()
    expected = embedded_answer(embedded, batch)
    assert len(set(expected[0])) == 2  # both labels occur, so agreement means something

    http = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
    tensor = httpclient.InferInput("TEXT", [len(batch), 1], "BYTES")
    tensor.set_data_from_numpy(column(batch), binary_data=True)
    assert_same(triton_answer(http.infer("sentiment", [tensor])), expected)
    http.close()

    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    tensor = grpcclient.InferInput("TEXT", [len(batch), 1], "BYTES")
    tensor.set_data_from_numpy(column(batch))
    assert_same(triton_answer(grpc.infer("sentiment", [tensor])), expected)
    grpc.close()


def metric(text: str, name: str) -> float:
    found = re.search(rf'^{name}{{[^}}]*model="sentiment"[^}}]*}} (\S+)$', text, re.M)
    assert found, f"{name} for model sentiment not in Triton's metrics"
    return float(found.group(1))


def test_triton_batches_concurrent_requests(triton: TritonServer) -> None:
    import tritonclient.http as httpclient

    before = httpx.get(triton.metrics_url).text
    batch = texts()

    def one_client(worker: int) -> None:
        client = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
        for i in range(8):
            tensor = httpclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(column([batch[(worker * 8 + i) % len(batch)]]))
            client.infer("sentiment", [tensor])
        client.close()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one_client, range(16)))
    after = httpx.get(triton.metrics_url).text

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    assert delta("nv_inference_request_success") == 128
    assert delta("nv_inference_count") == 128
    executions = delta("nv_inference_exec_count")
    # Dynamic batching ran: fewer model executions than requests.
    assert 0 < executions < 128, executions
    assert delta("nv_inference_queue_duration_us") > 0


def test_triton_refuses_bad_requests_and_keeps_serving(triton: TritonServer) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
    too_many = httpclient.InferInput("TEXT", [65, 1], "BYTES")
    too_many.set_data_from_numpy(column(["fine"] * 65))
    with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
        client.infer("sentiment", [too_many])
    wrong = httpclient.InferInput("WORDS", [1, 1], "BYTES")
    wrong.set_data_from_numpy(column(["fine"]))
    with pytest.raises(InferenceServerException, match="WORDS"):
        client.infer("sentiment", [wrong])
    with pytest.raises(InferenceServerException, match="unknown model|not found"):
        client.infer("nope", [wrong])
    client.close()
    assert is_ready(triton.url)


def test_gateway_serves_the_embedded_answers_through_triton(
    triton: TritonServer, embedded: Running, python_repo: Path
) -> None:
    gateway = start_server(".", "--backend", "triton", "--triton-url", triton.grpc_url)
    try:
        batch = texts() * 2  # 128 texts: more than Triton's max_batch_size, sent in chunks
        assert_same(embedded_answer(gateway, batch), embedded_answer(embedded, batch))
        body = httpx.post(f"{gateway.url}/v1/sentiment", json={"text": REVIEWS[0]}).json()
        assert body["model"] == "sentiment"
        assert body["version"] >= 1
        empty = httpx.post(f"{gateway.url}/v1/sentiment", json={"texts": ["fine", " "]})
        assert empty.status_code == 400
        assert "text 1 is empty" in empty.json()["error"]
        unknown = httpx.post(f"{gateway.url}/v1/sentiment", json={"text": "x", "model": "nope"})
        assert unknown.status_code == 404, unknown.text
        metrics = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text
        assert re.search(r'sentiserve_request_duration_seconds_count\{model="sentiment"', metrics)
        assert not re.search(r"^nv_inference_request_success\{", metrics, re.M)  # Triton's job
        # The drift baseline, read from the Triton configuration's reference parameter: the
        # manifest's label shares, exported as the embedded server exports them.
        manifest = ModelRepository(python_repo).load("sentiment").manifest
        for label, share in manifest.reference["label_shares"].items():
            found = re.search(
                rf'^sentiserve_reference_label_share\{{label="{label}",model="sentiment",'
                rf'version="{manifest.version}"\}} (\S+)$',
                metrics,
                re.M,
            )
            assert found, f"no reference share for {label}"
            assert float(found.group(1)) == pytest.approx(share)
        # Triton tokenizes, so the gateway counts no lengths and exports no length baseline.
        assert not re.search(r"^sentiserve_reference_input_tokens\{", metrics, re.M)
        assert httpx.get(f"{gateway.url}/v2/health/ready").status_code == 200

        # The drop-in routes through the gateway: the same probabilities; what only the
        # embedded server knows (a request's own truncation, logits) is refused clearly.
        want = embedded_answer(embedded, REVIEWS[:3])[1]
        tei = httpx.post(f"{gateway.url}/predict", json={"inputs": [[t] for t in REVIEWS[:3]]})
        assert tei.status_code == 200, tei.text
        got = np.array(
            [[d["score"] for d in sorted(row, key=lambda d: d["label"])] for row in tei.json()]
        )
        assert float(np.abs(got - want).max()) <= 1e-6
        info = httpx.get(f"{gateway.url}/info").json()
        id2label = info["model_type"]["classifier"]["id2label"]
        labels = [id2label[str(i)] for i in range(len(id2label))]
        assert info["max_input_length"] is None, "Triton's business"
        vllm = httpx.post(f"{gateway.url}/v1/classify", json={"input": REVIEWS[:3]}).json()
        probs = np.array([d["probs"] for d in vllm["data"]])[:, np.argsort(labels)]
        assert float(np.abs(probs - want).max()) <= 1e-6
        refused = httpx.post(f"{gateway.url}/predict", json={"inputs": "x", "truncate": False})
        assert refused.status_code == 422
        assert "needs the embedded server" in refused.json()["error"]
        raw = httpx.post(f"{gateway.url}/predict", json={"inputs": "x", "raw_scores": True})
        assert raw.status_code == 422
        assert "not available through the Triton backend" in raw.json()["error"]
        config = httpx.get(f"{gateway.url}/v2/models/sentiment/config").json()
        assert config == httpx.get(f"{triton.url}/v2/models/sentiment/config").json()
    finally:
        stop(gateway)


def test_gateway_forwards_kserve_v2_over_rest_and_grpc(
    triton: TritonServer, embedded: Running
) -> None:
    """tritonclient against the gateway (REST with binary tensors, and gRPC) gets Triton's
    answers, metadata and statistics: one data plane interface, backed by Triton."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    gateway = start_server(".", "--backend", "triton", "--triton-url", triton.grpc_url)
    try:
        batch = texts()
        expected = embedded_answer(embedded, batch)
        http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
        tensor = httpclient.InferInput("TEXT", [len(batch), 1], "BYTES")
        tensor.set_data_from_numpy(column(batch), binary_data=True)
        result = http.infer("sentiment", [tensor])
        assert_same(triton_answer(result), expected)
        assert list(result.as_numpy("LABEL").shape) == [len(batch), 1]
        direct = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
        assert http.get_model_metadata("sentiment") == direct.get_model_metadata("sentiment")
        stats = http.get_inference_statistics("sentiment")["model_stats"][0]
        assert int(stats["inference_count"]) >= len(batch)
        with pytest.raises(httpclient.InferenceServerException, match="unknown model|nope"):
            http.infer("nope", [tensor])
        http.close()
        direct.close()
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
        tensor = grpcclient.InferInput("TEXT", [len(batch), 1], "BYTES")
        tensor.set_data_from_numpy(column(batch))
        assert_same(triton_answer(grpc.infer("sentiment", [tensor])), expected)
        assert grpc.is_model_ready("sentiment")
        grpc.close()
    finally:
        stop(gateway)


def test_embedded_metadata_and_shapes_equal_tritons(
    triton: TritonServer, embedded: Running
) -> None:
    """A client written against Triton works unchanged against the embedded server."""
    import tritonclient.http as httpclient

    ours = httpclient.InferenceServerClient(embedded.url.removeprefix("http://"))
    theirs = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
    try:
        mine, tritons = ours.get_model_metadata("sentiment"), theirs.get_model_metadata("sentiment")
        for key in ("inputs", "outputs"):
            assert mine[key] == tritons[key], key
        batch = texts()[:5]
        for client in (ours, theirs):
            tensor = httpclient.InferInput("TEXT", [len(batch), 1], "BYTES")
            tensor.set_data_from_numpy(column(batch), binary_data=True)
            result = client.infer("sentiment", [tensor])
            assert list(result.as_numpy("LABEL").shape) == [5, 1]
            assert list(result.as_numpy("PROBABILITIES").shape) == [5, 2]
    finally:
        ours.close()
        theirs.close()


def test_model_configuration_equals_tritons_over_http_and_grpc(
    triton: TritonServer, embedded: Running
) -> None:
    """Triton's tools read a model's configuration (``get_model_config()``); the embedded
    server answers what Triton answers for the same repository, field by field."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    ours = httpclient.InferenceServerClient(embedded.url.removeprefix("http://"))
    theirs = httpclient.InferenceServerClient(triton.url.removeprefix("http://"))
    ours_rpc = grpcclient.InferenceServerClient(f"127.0.0.1:{embedded.grpc_port}")
    theirs_rpc = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        mine, tritons = ours.get_model_config("sentiment"), theirs.get_model_config("sentiment")
        assert set(mine) == set(tritons)
        for key in tritons:
            assert mine[key] == tritons[key], key
        assert ours.get_model_config("sentiment", "1") == theirs.get_model_config("sentiment", "1")
        assert ours_rpc.get_model_config("sentiment") == theirs_rpc.get_model_config("sentiment")
        assert ours_rpc.get_model_config("sentiment", as_json=True)["config"]["parameters"]
        for client in (ours, theirs):
            with pytest.raises(InferenceServerException):
                client.get_model_config("nope")
    finally:
        for client in (ours, theirs, ours_rpc, theirs_rpc):
            client.close()


def backend_ready(gateway: Running) -> float | None:
    metrics = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text
    found = re.search(r"^sentiserve_backend_ready (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else None


def test_gateway_without_triton_stays_ready_and_says_why() -> None:
    """Readiness means "this gateway can serve": a missing Triton turns requests into clear
    503s and shows in sentiserve_backend_ready, but does not empty the gateway's Service."""
    gateway = start_server(".", "--backend", "triton", "--triton-url", f"127.0.0.1:{free_port()}")
    try:
        assert httpx.get(f"{gateway.url}/v2/health/ready").status_code == 200
        answer = httpx.post(f"{gateway.url}/v1/sentiment", json={"text": "fine"}, timeout=30)
        assert answer.status_code == 503
        assert "Triton is unavailable" in answer.json()["error"]
        assert wait_until(lambda: backend_ready(gateway) == 0.0, 30, interval_s=0.2)
    finally:
        stop(gateway)


def triton_successes(server: TritonServer) -> float:
    metrics = httpx.get(server.metrics_url).text
    found = re.search(
        r'^nv_inference_request_success\{model="sentiment",version="\d+"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_gateway_spreads_requests_over_every_triton(
    environment: TritonEnvironment, triton: TritonServer, python_repo: Path, tmp_path: Path
) -> None:
    """Two Triton processes behind one gRPC target (an address list here; a headless
    Service's DNS name on Kubernetes): the gateway's round-robin channel sends each a share,
    where one connection to a ClusterIP would pin every request to one pod."""
    second = start_triton(environment, python_repo, tmp_path / "second.log")
    both = [triton, second]
    target = "ipv4:" + ",".join(s.grpc_url for s in both)
    gateway = start_server(".", "--backend", "triton", "--triton-url", target)
    try:
        before = [triton_successes(s) for s in both]
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(
                    lambda t: (
                        client.post(f"{gateway.url}/v1/sentiment", json={"text": t}).status_code
                    ),
                    [t for t, _ in toy_texts(40, seed=5)],
                )
            )
        assert codes == [200] * 40
        served = [triton_successes(s) - b for s, b in zip(both, before, strict=True)]
        assert sum(served) == 40
        assert min(served) >= 10, f"requests per Triton: {served}"
        assert wait_until(lambda: backend_ready(gateway) == 1.0, 30, interval_s=0.2)
    finally:
        stop(gateway)
        second.stop()


def test_gpu_form_ensemble_runs_on_triton(
    environment: TritonEnvironment, tiny_build: Path, tmp_path: Path
) -> None:
    """The GPU form's ensemble, tokenizer and postprocess run unchanged; only the ONNX
    member is swapped for a python stand-in (the bundled Triton has no onnxruntime backend)."""
    from sentiserve.repository.served import open_model

    repo = copy_repository(tiny_build, tmp_path / "repo")
    configs = write_gpu_form(repo, "sentiment", Platform.ONNXRUNTIME)
    onnx_member = repo / configs[2].name
    text = (onnx_member / CONFIG).read_text()
    assert 'platform: "onnxruntime_onnx"' in text
    assert "KIND_GPU" in text
    stand_in = text.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    # No TensorRT accelerator on the CPU; the warm-up stays: Triton runs it before Ready.
    head, accelerator = stand_in.replace("KIND_GPU", "KIND_CPU").split("optimization {")
    stand_in = head + accelerator.split("} ] } }\n", 1)[1]
    assert "model_warmup" in stand_in
    stand_in += 'parameters { key: "sentiserve_role" value: { string_value: "engine" } }\n'
    (onnx_member / CONFIG).write_text(stand_in)
    version_dir = next(p for p in onnx_member.iterdir() if p.is_dir())
    (version_dir / "model.py").write_text(
        (repo / "sentiment" / version_dir.name / "model.py").read_text()
    )

    version = ModelRepository(repo).load("sentiment")
    variant = version.manifest.engine_for("cuda")
    batch = texts()
    expected = open_model(version, engine=variant).probabilities(batch)
    server = start_triton(environment, repo, tmp_path / "triton.log")
    try:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("TEXT", [len(batch), 1], "BYTES")
        tensor.set_data_from_numpy(column(batch))
        labels, probs = triton_answer(client.infer("sentiment", [tensor]))
        # Every member's configuration, completed as the embedded server completes it for
        # GET /v2/models/{m}/config, is what Triton reports.
        for config in configs:
            reported = client.get_model_config(config.name).config
            assert reported == read_config(repo / config.name / CONFIG), config.name
        client.close()
    finally:
        server.stop()
    names = version.manifest.labels
    assert labels == [names[i] for i in expected.argmax(axis=1)]
    assert float(np.abs(probs - expected).max()) <= 1e-4


def processes_mentioning(*texts: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if all(t in line for t in texts):
            found.append(int(cmdline.parent.name))
    return found


def parent_of(pid: int) -> int | None:
    """``pid``'s parent (None once it has ended)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def shm_prefix_of(repo: Path) -> str:
    """The python backend's shared memory prefix on the command line of the tritonserver that
    serves ``repo`` (each server has its own, so that servers side by side never share one)."""
    option = "shm-region-prefix-name="
    found = processes_mentioning(option, str(repo))
    # A stub Triton has forked but not yet exec'd still carries Triton's command line: the
    # server is the one whose parent is not among them.
    (pid,) = [p for p in found if parent_of(p) not in found]
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    (prefix,) = [a.split(option, 1)[1] for a in args if option in a]
    assert prefix.startswith(SHM_PREFIX), prefix
    assert prefix != SHM_PREFIX, "the default prefix is shared by every server"
    return prefix


def alive(proc: subprocess.Popen[str]) -> Callable[[], None]:
    def check() -> None:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""

    return check


def triton_cli(environment: TritonEnvironment, repo: Path, http: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        serve_command(
            repo,
            http,
            free_port(),
            free_port(),
            "--home",
            str(environment.home),
            "--exit-timeout-s",
            "5",
            command="triton",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_while_triton_loads_leaves_nothing_behind(
    environment: TritonEnvironment, tiny_build: Path, tmp_path: Path
) -> None:
    repo = copy_repository(tiny_build, tmp_path / "repo")
    proc = triton_cli(environment, repo, free_port())
    started = wait_until(
        lambda: bool(processes_mentioning("tritonserver", str(repo))), 60, check=alive(proc)
    )
    assert started, "tritonserver never started"
    prefix = shm_prefix_of(repo)
    proc.send_signal(signal.SIGTERM)  # while Triton is still loading the model
    assert proc.wait(60) == 0
    assert not processes_mentioning(str(repo)), "tritonserver or a stub outlived the CLI"
    assert not shm_regions(prefix), "the server left shared memory behind"


def test_triton_cli_prepares_serves_and_stops_cleanly(
    environment: TritonEnvironment, tiny_build: Path, tmp_path: Path
) -> None:
    repo = copy_repository(tiny_build, tmp_path / "repo")
    for model_py in repo.glob("sentiment/*/model.py"):
        model_py.unlink()  # an older repository: the CLI writes the python form
    http = free_port()
    proc = triton_cli(environment, repo, http)
    url = f"http://127.0.0.1:{http}"
    try:
        assert wait_until(lambda: is_ready(url), 120, interval_s=0.2, check=alive(proc))
        prefix = shm_prefix_of(repo)
        assert shm_regions(prefix), "the python backend's regions carry the server's prefix"
        assert all((v / "model.py").is_file() for v in repo.glob("sentiment/[0-9]*"))
        tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["great fun"]}
        answer = httpx.post(f"{url}/v2/models/sentiment/infer", json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["PROBABILITIES"]["shape"] == [1, 2]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0
    assert not processes_mentioning(str(repo)), "tritonserver or a stub outlived the CLI"
    assert not shm_regions(prefix), f"left in /dev/shm: {shm_regions(prefix)}"


def test_gateway_splits_and_shadows_the_versions_triton_loads(
    environment: TritonEnvironment, tiny_build: Path, tmp_path: Path
) -> None:
    """A rollout in config.pbtxt: Triton loads every version its version_policy names, the
    gateway shares unversioned requests by the split and copies them to the shadow version
    (whose answers Triton counts and the gateway compares, never returns)."""
    from sentiserve.repository.rollout import Rollout, VersionPolicy, write_rollout

    repo = copy_repository(tiny_build, tmp_path / "repo")
    for number in (2, 3):
        folder = repo / "sentiment" / str(number)
        shutil.copytree(repo / "sentiment" / "1", folder)
        manifest = (folder / "manifest.json").read_text()
        (folder / "manifest.json").write_text(
            manifest.replace('"version": 1', f'"version": {number}')
        )
    write_python_form(repo, "sentiment")
    write_rollout(repo / "sentiment" / CONFIG, Rollout(VersionPolicy("all"), {1: 3, 2: 1}, 3))
    server = start_triton(environment, repo, tmp_path / "triton.log")
    gateway = start_server(".", "--backend", "triton", "--triton-url", server.grpc_url)
    try:
        index = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
        assert sorted(int(m["version"]) for m in index if m.get("state") == "READY") == [1, 2, 3]
        with httpx.Client(timeout=30) as client:
            versions = [
                client.post(f"{gateway.url}/v1/sentiment", json={"text": t}).json()["version"]
                for t in [REVIEWS[i % 3] for i in range(200)]
            ]
        assert {v: versions.count(v) for v in set(versions)} == {1: 150, 2: 50}
        pinned = httpx.post(f"{gateway.url}/v1/sentiment?version=3", json={"text": "x"}).json()
        assert pinned["version"] == 3
        metrics_url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"

        # Shadow answers come after the replies; the copies of versions 1 and 2 both count.
        def copies() -> float:
            text = httpx.get(metrics_url).text
            pattern = (
                r'^sentiserve_shadow_predictions_total\{agreement="true",model="sentiment",'
                r'shadow_version="3",version="\d"\} (\S+)$'
            )
            return sum(float(x) for x in re.findall(pattern, text, re.M))

        # Identical versions: every copy agrees.
        assert wait_until(lambda: copies() == 200, 30, interval_s=0.2), copies()
        triton_metrics = httpx.get(server.metrics_url).text
        found = re.search(
            r'^nv_inference_request_success\{model="sentiment",version="3"\} (\S+)$',
            triton_metrics,
            re.M,
        )
        assert found is not None
        assert float(found.group(1)) == 201, "Triton ran every shadow copy and the pinned one"
    finally:
        stop(gateway)
        server.stop()


def test_one_trace_covers_the_gateway_and_triton(
    environment: TritonEnvironment, python_repo: Path, tmp_path: Path
) -> None:
    """A client's traceparent through the gateway (spans over OTLP/gRPC) to real Triton with
    its own OpenTelemetry tracing (OTLP/HTTP): one trace, Triton's request span a child of
    the gateway's call to it, the gateway's spans inside its server span."""
    from tests.integration.otlp import Receiver

    receiver = Receiver()
    server = start_triton(environment, python_repo, tmp_path / "triton.log", receiver.http_url)
    gateway = start_server(
        ".",
        *("--backend", "triton", "--triton-url", server.grpc_url),
        *("--otlp-endpoint", receiver.grpc_url, "--otlp-service-name", "gateway"),
    )
    trace = "5bf92f3577b34da6a3ce929d0e0e4736"
    try:
        answer = httpx.post(
            f"{gateway.url}/v1/sentiment",
            json={"text": REVIEWS[0]},
            headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        )
        assert answer.status_code == 200
        assert answer.headers["traceresponse"].startswith(f"00-{trace}-")
        spans = receiver.wait_for(trace, {"POST /v1/sentiment", "triton", "InferRequest"})
    finally:
        stop(gateway)
        server.stop()
        receiver.stop()
    by_name = {s.name: s for s in spans}
    root, call, triton_request = (
        by_name["POST /v1/sentiment"],
        by_name["triton"],
        by_name["InferRequest"],
    )
    assert (root.service, call.service, triton_request.service) == ("gateway", "gateway", "triton")
    assert root.parent_id == "00f067aa0ba902b7"
    assert call.parent_id == root.span_id
    assert call.inside(root)
    assert triton_request.parent_id == call.span_id, "Triton continued the gateway's context"
    assert {s.name for s in spans if s.service == "triton"} >= {"InferRequest", "sentiment"}
