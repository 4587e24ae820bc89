"""`sentiserve serve` started through its real CLI on free ports, tested over HTTP with
httpx and with tritonclient (a client nobody here wrote)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.serving import Running, bytes_tensor, free_port, start_server, stop

TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess"]


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository", "--max-texts", "64")
    yield running
    stop(running)


def v1(server: Running, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/sentiment", json=body, timeout=30)


def test_v1_classifies_one_and_many(server: Running) -> None:
    one = v1(server, {"text": TEXTS[0]})
    assert one.status_code == 200, one.text
    doc = one.json()
    assert doc["model"] == "sentiment"
    assert doc["version"] == 1
    (result,) = doc["results"]
    assert set(result["scores"]) == {"negative", "positive"}
    assert result["score"] == max(result["scores"].values())
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    many = v1(server, {"texts": TEXTS}).json()["results"]
    assert len(many) == 3
    assert many[0] == result, "a text's result does not depend on its batch-mates"


def test_request_id_is_echoed_or_generated(server: Running) -> None:
    r = httpx.post(
        f"{server.url}/v1/sentiment", json={"text": "fine"}, headers={"X-Request-ID": "abc-123"}
    )
    assert r.headers["x-request-id"] == "abc-123"
    assert len(v1(server, {"text": "fine"}).headers["x-request-id"]) == 32


def test_tritonclient_http_matches_v1(server: Running) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("sentiment")
    meta = client.get_model_metadata("sentiment")
    assert [i["name"] for i in meta["inputs"]] == ["TEXT", "TEXT_PAIR"]
    for binary in (True, False):
        text = httpclient.InferInput("TEXT", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(
            np.array([t.encode() for t in TEXTS], dtype=object), binary_data=binary
        )
        outputs = [
            httpclient.InferRequestedOutput(name, binary_data=binary)
            for name in ("LABEL", "PROBABILITIES")
        ]
        result = client.infer("sentiment", [text], outputs=outputs)
        labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("LABEL")]
        probs = result.as_numpy("PROBABILITIES")
        expected = v1(server, {"texts": TEXTS}).json()["results"]
        assert labels == [r["label"] for r in expected]
        want = np.array([[r["scores"]["negative"], r["scores"]["positive"]] for r in expected])
        assert np.abs(probs - want).max() <= 1e-6
    stats = client.get_inference_statistics("sentiment")["model_stats"][0]
    assert stats["inference_count"] >= 6
    assert stats["execution_count"] >= 1


def test_metrics_use_triton_names(server: Running) -> None:
    v1(server, {"texts": TEXTS})
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    assert "# TYPE nv_inference_count counter" in text
    count = [ln for ln in text.splitlines() if ln.startswith("nv_inference_count{")]
    assert count
    assert float(count[0].split()[-1]) >= 3
    assert 'nv_inference_request_success{model="sentiment",version="1"}' in text
    assert "sentiserve_batch_size_bucket" in text
    assert "process_resident_memory_bytes" in text


def raw_v2(
    server: Running, body: bytes, headers: dict[str, str] | None = None, model: str = "sentiment"
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", content=body, headers=headers or {}, timeout=30
    )


def binary_text_request(items: list[bytes]) -> tuple[bytes, dict[str, str]]:
    blob = bytes_tensor(items)
    spec = {
        "name": "TEXT",
        "datatype": "BYTES",
        "shape": [len(items)],
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [spec]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": ""}, 400, "text 0 is empty"),
        ({"text": "   \n\t"}, 400, "text 0 is empty"),
        ({"texts": []}, 400, "no texts"),
        ({"texts": ["ok", 5]}, 400, "texts.1"),
        ({"text": 7}, 400, "text"),
        ({}, 400, "exactly one of"),
        ({"text": "a", "texts": ["b"]}, 400, "exactly one of"),
        ({"text": "fine", "model": "nope"}, 404, "unknown model 'nope'"),
        ({"texts": ["x"] * 65}, 413, "the limit is 64"),
        ({"text": "fine", "surprise": 1}, 400, "surprise"),
    ],
)
def test_v1_bad_input(server: Running, body: object, status: int, message: str) -> None:
    r = v1(server, body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_v1_invalid_json_and_huge_text(server: Running) -> None:
    r = httpx.post(
        f"{server.url}/v1/sentiment",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    big = v1(server, {"text": "good " * 200_000})  # 1 MB: truncated by policy, still answered
    assert big.status_code == 200, big.text


def test_one_hundred_thousand_texts_are_refused_with_the_limit(server: Running) -> None:
    texts = [f"t{i}" for i in range(100_000)]
    r = v1(server, {"texts": texts})
    assert r.status_code == 413, r.text
    assert "the limit is 64" in r.json()["error"]
    doc = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [100_000], "data": texts}]}
    r = raw_v2(server, json.dumps(doc).encode())
    assert r.status_code == 413, r.text
    body, headers = binary_text_request([t.encode() for t in texts])
    r = raw_v2(server, body, headers)
    assert r.status_code == 413, r.text
    assert v1(server, {"text": "still fine"}).status_code == 200


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["a"]}]},
            "shape says 2 elements, data has 1",
        ),
        (
            {"inputs": [{"name": "TEXT", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            "expected datatype BYTES",
        ),
        (
            {"inputs": [{"name": "WORDS", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            "takes input TEXT (BYTES) and optionally TEXT_PAIR",
        ),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        (
            {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1], "data": ["a"]}]},
            "inputs.0.shape.0: Input should be greater than or equal to 0",
        ),
    ],
)
def test_v2_bad_input(server: Running, doc: object, message: str) -> None:
    r = raw_v2(server, json.dumps(doc).encode())
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_v2_invalid_utf8_and_malformed_binary(server: Running) -> None:
    body, headers = binary_text_request([b"fine", b"\xff\xfe broken"])
    r = raw_v2(server, body, headers)
    assert r.status_code == 400
    assert "element 1 is not valid UTF-8" in r.json()["error"]
    body, headers = binary_text_request([b"fine"])
    r = raw_v2(server, body[:-2], headers)
    assert r.status_code == 400
    r = raw_v2(server, b"{broken", {})
    assert r.status_code == 400
    assert raw_v2(server, b"{}", {}, model="nope").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/sentiment/versions/9").status_code == 404


def test_sigterm_drains_in_flight_requests_then_exits(tiny_build: Path) -> None:
    """With several engine instances busy, SIGTERM lets every accepted request finish."""
    from concurrent.futures import ThreadPoolExecutor

    running = start_server(
        tiny_build / "model_repository", "--instances", "3", env={"SENTISERVE_LOG_LEVEL": "INFO"}
    )
    body = {"texts": [" ".join(["good film"] * 60)] * 64}
    outcomes: list[str] = []
    first = threading.Event()

    def send() -> None:
        try:
            r = httpx.post(f"{running.url}/v1/sentiment", json=body, timeout=30)
            outcomes.append(str(r.status_code))
            first.set()
        except httpx.ConnectError:
            outcomes.append("refused")  # arrived after the listener closed: never accepted
        except httpx.ReadError:
            # Reset with nothing read: a connection still in the kernel's accept queue when
            # the listener closed (never seen by the server), or one the server dropped; the
            # access log below tells them apart.
            outcomes.append("reset")
        except httpx.RemoteProtocolError as exc:
            # Closed with nothing read: uvicorn's graceful shutdown closes a connection it has
            # accepted but whose request it has not begun to read (no request cycle yet), so
            # the request never reached the app; the access log below checks that too. Any
            # other protocol error is a failure.
            unread = "without sending a response" in str(exc)
            outcomes.append("closed" if unread else type(exc).__name__)
        except httpx.HTTPError as exc:
            outcomes.append(type(exc).__name__)  # anything else: a failure

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send) for _ in range(40)]
        assert first.wait(60), "no request was answered"
        running.proc.send_signal(signal.SIGTERM)
        for f in futures:
            f.result()
    # uvicorn re-raises the signal after its graceful shutdown: exit by SIGTERM is normal.
    assert running.proc.wait(30) in (0, -signal.SIGTERM)
    assert set(outcomes) <= {"200", "refused", "reset", "closed"}, outcomes
    assert "200" in outcomes
    # Every request the server took in, it answered, and every answer reached its client:
    # the resets and closes were never read.
    _, log = running.proc.communicate(timeout=10)
    marker = "sentiserve.access: "
    answered = [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line]
    assert [a["status"] for a in answered] == [200] * outcomes.count("200"), log[-2000:]


def test_tritonclient_grpc_matches_v1(server: Running) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("sentiment")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata().name == "sentiserve"
    meta = client.get_model_metadata("sentiment")
    assert [i.name for i in meta.inputs] == ["TEXT", "TEXT_PAIR"]
    text = grpcclient.InferInput("TEXT", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    result = client.infer("sentiment", [text])
    labels = [x.decode() for x in result.as_numpy("LABEL")]
    probs = result.as_numpy("PROBABILITIES")
    expected = v1(server, {"texts": TEXTS}).json()["results"]
    assert labels == [r["label"] for r in expected]
    want = np.array([[r["scores"]["negative"], r["scores"]["positive"]] for r in expected])
    assert np.abs(probs - want).max() <= 1e-6
    stats = client.get_inference_statistics("sentiment").model_stats[0]
    assert stats.inference_count >= 3
    index = client.get_model_repository_index().models
    assert [(m.name, m.state) for m in index] == [("sentiment", "READY")]


def test_grpc_bad_requests_get_status_codes(server: Running) -> None:
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    def code_of(inputs: list[object], model: str = "sentiment") -> str:
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs)  # type: ignore[arg-type]
        return str(info.value.status())

    wrong_type = grpcclient.InferInput("TEXT", [1], "FP32")
    wrong_type.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    assert code_of([wrong_type]) == str(grpc.StatusCode.INVALID_ARGUMENT)
    wrong_name = grpcclient.InferInput("WORDS", [1], "BYTES")
    wrong_name.set_data_from_numpy(np.array([b"fine"], dtype=object))
    assert code_of([wrong_name]) == str(grpc.StatusCode.INVALID_ARGUMENT)
    bad_utf8 = grpcclient.InferInput("TEXT", [1], "BYTES")
    bad_utf8.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
    assert code_of([bad_utf8]) == str(grpc.StatusCode.INVALID_ARGUMENT)
    empty = grpcclient.InferInput("TEXT", [1], "BYTES")
    empty.set_data_from_numpy(np.array([b"  "], dtype=object))
    assert code_of([empty]) == str(grpc.StatusCode.INVALID_ARGUMENT)
    fine = grpcclient.InferInput("TEXT", [1], "BYTES")
    fine.set_data_from_numpy(np.array([b"fine"], dtype=object))
    assert code_of([fine], model="nope") == str(grpc.StatusCode.NOT_FOUND)


def test_api_key_guards_inference_only(tiny_build: Path) -> None:
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    key = "s3cret-key-for-tests"
    running = start_server(tiny_build / "model_repository", env={"SENTISERVE_API_KEY": key})
    try:
        url = f"{running.url}/v1/sentiment"
        denied = [
            httpx.post(url, json={"text": "fine"}),
            httpx.post(url, json={"text": "fine"}, headers={"Authorization": "Bearer wrong"}),
            httpx.post(url, json={"text": "fine"}, headers={"Authorization": key}),
        ]
        assert [r.status_code for r in denied] == [401, 401, 401]
        assert len({r.json()["error"] for r in denied}) == 1, "401s must not say what failed"
        ok = httpx.post(url, json={"text": "fine"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert (
            httpx.post(f"{running.url}/v2/models/sentiment/infer", content=b"{}").status_code == 401
        )
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics").status_code == 200

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.grpc_port}")
        text = grpcclient.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"fine"], dtype=object))
        with pytest.raises(InferenceServerException) as info:
            client.infer("sentiment", [text])
        assert info.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
        result = client.infer("sentiment", [text], headers={"authorization": f"Bearer {key}"})
        assert result.as_numpy("LABEL").shape == (1,)
    finally:
        stop(running)


def test_short_api_key_is_refused_at_start(tiny_build: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentiserve",
            "serve",
            "--model-repository",
            str(tiny_build / "model_repository"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SENTISERVE_API_KEY": "short"},
    )
    assert proc.returncode == 2
    assert "SENTISERVE_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hot_reload_is_atomic_and_a_failed_load_keeps_serving(
    tiny_build: Path, tmp_path: Path
) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_build / "model_repository", repo)
    off = start_server(repo)
    try:
        r = httpx.post(f"{off.url}/v2/repository/models/sentiment/load")
        assert r.status_code == 403
        assert "--model-control" in r.json()["error"]
    finally:
        stop(off)

    running = start_server(repo, "--model-control")
    try:
        before = v1(running, {"texts": TEXTS}).json()
        # Version 2: the same files under a new number.
        v2_dir = repo / "sentiment" / "2"
        shutil.copytree(repo / "sentiment" / "1", v2_dir)
        manifest = json.loads((v2_dir / "manifest.json").read_text())
        (v2_dir / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
        assert httpx.post(f"{running.url}/v2/repository/models/sentiment/load").status_code == 200
        after = v1(running, {"texts": TEXTS}).json()
        assert after["version"] == 2
        assert after["results"] == before["results"]

        # Version 3 is corrupt: the load fails with the reason, version 2 keeps serving.
        v3_dir = repo / "sentiment" / "3"
        shutil.copytree(v2_dir, v3_dir)
        (v3_dir / "manifest.json").write_text(json.dumps({**manifest, "version": 3}))
        engine = v3_dir / "model.int8.onnx"
        engine.write_bytes(engine.read_bytes()[:-1] + b"\x00")
        r = httpx.post(f"{running.url}/v2/repository/models/sentiment/load")
        assert r.status_code == 503
        assert "corrupt" in r.json()["error"]
        assert v1(running, {"text": "fine"}).json()["version"] == 2
        index = httpx.post(f"{running.url}/v2/repository/index").json()
        assert index == [{"name": "sentiment", "version": "2", "state": "READY", "reason": ""}]

        assert httpx.post(f"{running.url}/v2/repository/models/sentiment/unload").status_code == 200
        assert httpx.get(f"{running.url}/v2/models/sentiment/ready").status_code == 400
        assert v1(running, {"text": "fine"}).status_code == 404
    finally:
        stop(running)


def test_results_do_not_depend_on_batch_mates(server: Running) -> None:
    """The same texts alone, then inside concurrent mixed-length load: identical labels,
    |Δp| <= 1e-4 (the length-grouping batcher pads them with different company)."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [
        " ".join(["good", "film", "dull", "plot"][: 1 + i % 4] * (1 + i % 9)) for i in range(40)
    ]
    alone = [v1(server, {"text": t}).json()["results"][0] for t in texts]
    noise = [" ".join(["story"] * n) for n in (3, 50, 90, 7, 120)]

    def mixed(i: int) -> dict[str, object]:
        batch = [noise[i % len(noise)], texts[i], noise[(i + 2) % len(noise)]]
        return v1(server, {"texts": batch}).json()["results"][1]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(mixed, range(len(texts))))
    for a, b in zip(alone, together, strict=True):
        assert a["label"] == b["label"]
        for label, p in a["scores"].items():
            assert abs(p - b["scores"][label]) <= 1e-4


def test_raw_engine_model_matches_text_model(server: Running, tiny_build: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from sentiserve.engine.base import softmax
    from sentiserve.repository.layout import ModelRepository
    from sentiserve.repository.served import open_model

    version = ModelRepository(tiny_build / "model_repository").load("sentiment")
    served = open_model(version)
    batch = served.tokenizer(TEXTS)
    # The raw model answers logits, as Triton's ONNX member does; the text model divides them
    # by the build's calibration temperature before the softmax.
    temperature = version.manifest.temperature
    assert temperature != 1.0, "the tiny build is calibrated"
    expected = v1(server, {"texts": TEXTS}).json()["results"]
    want = np.array([[r["scores"]["negative"], r["scores"]["positive"]] for r in expected])

    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    grpc_ = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert http.is_model_ready("sentiment_onnx")
    assert [i["name"] for i in http.get_model_metadata("sentiment_onnx")["inputs"]][:2] == [
        "input_ids",
        "attention_mask",
    ]
    for module, client in ((httpclient, http), (grpcclient, grpc_)):
        inputs = []
        for name, array in (
            ("input_ids", batch.input_ids),
            ("attention_mask", batch.attention_mask),
        ):
            tensor = module.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        logits = client.infer("sentiment_onnx", inputs).as_numpy("logits")
        assert logits.shape == (3, 2)
        assert np.abs(softmax(logits / temperature) - want).max() <= 1e-6


def test_raw_engine_model_bad_input(server: Running) -> None:
    def send(ids: list[list[int]], mask: list[list[int]]) -> httpx.Response:
        doc = {
            "inputs": [
                {
                    "name": name,
                    "datatype": "INT64",
                    "shape": [len(rows), len(rows[0])],
                    "data": rows,
                }
                for name, rows in (("input_ids", ids), ("attention_mask", mask))
            ]
        }
        return raw_v2(server, json.dumps(doc).encode(), model="sentiment_onnx")

    assert send([[2, 10, 3]], [[1, 1, 1]]).status_code == 200
    left_padded = send([[0, 2, 3]], [[0, 1, 1]])
    assert left_padded.status_code == 400
    assert "right padding" in left_padded.json()["error"]
    assert "token ids must be within" in send([[2, 10_000_000, 3]], [[1, 1, 1]]).json()["error"]
    assert send([[2, 10, 3]], [[1, 1]]).status_code == 400


@pytest.mark.parametrize("which", ["--http-port", "--grpc-port", "--metrics-port"])
def test_port_in_use_is_one_clear_error(tiny_build: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {
            "--http-port": free_port(),
            "--grpc-port": free_port(),
            "--metrics-port": free_port(),
            which: port,
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sentiserve",
                "serve",
                "--model-repository",
                str(tiny_build / "model_repository"),
                *[str(x) for kv in ports.items() for x in kv],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}" in proc.stderr
    assert "cannot bind" in proc.stderr
    assert "Traceback" not in proc.stderr
