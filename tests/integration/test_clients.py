"""Clients nobody here wrote: KServe's own Python client (REST and gRPC), in its own
environment, against the embedded server. Health answers are the Open Inference Protocol's
JSON bodies, and a client's default 60 s gRPC deadline is capped, never refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.serving import Running, start_server, stop

ROOT = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = ROOT / ".kserve" / "bin" / "python"
SCRIPT = ROOT / "tests" / "clients" / "kserve_conformance.py"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess"]


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(tiny_build / "model_repository")
    yield running
    stop(running)


def test_kserve_client_rest_and_grpc(server: Running) -> None:
    assert KSERVE_PYTHON.exists(), "KServe's client environment is missing: run `make kserve`"
    done = subprocess.run(
        [str(KSERVE_PYTHON), str(SCRIPT), server.url, f"127.0.0.1:{server.grpc_port}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    ours = httpx.post(f"{server.url}/v1/sentiment", json={"texts": TEXTS}).json()
    expected = [r["label"] for r in ours["results"]]
    for key in (
        "rest_live",
        "rest_ready",
        "rest_model_ready",
        "grpc_live",
        "grpc_ready",
        "grpc_model_ready",
    ):
        assert seen[key] is True, (key, seen)
    assert seen["rest_labels"] == expected
    assert seen["grpc_labels"] == expected
    assert seen["grpc_failures"] == [], seen["grpc_failures"][:3]


def test_hugging_face_inference_client(server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """``huggingface_hub.InferenceClient`` as users point it at an endpoint: by base URL
    (it POSTs to the URL itself) and by a model URL (the Inference API's /models/{model}).
    The tests run with the hub offline; the client's offline guard is lifted for this
    loopback server only."""
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)

    want = httpx.post(f"{server.url}/v1/sentiment", json={"texts": TEXTS}, timeout=30).json()
    for client in (
        InferenceClient(base_url=server.url),
        InferenceClient(model=f"{server.url}/models/sentiment"),
    ):
        for text, expected in zip(TEXTS, want["results"], strict=True):
            got = client.text_classification(text)
            assert [e.label for e in got][0] == expected["label"]
            for element in got:
                assert abs(element.score - expected["scores"][element.label]) <= 1e-6
        (best,) = client.text_classification(TEXTS[0], top_k=1)
        assert best.label == want["results"][0]["label"]
        raw = client.text_classification(TEXTS[0], function_to_apply="none")
        assert any(abs(e.score) > 1 or e.score < 0 for e in raw), "logits"
