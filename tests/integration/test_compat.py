"""The drop-in routes for TEI, Hugging Face Inference, vLLM and Infinity clients, in process
(the real app through an ASGI transport, the real gRPC server on a loopback port, the tiny
model): the peers' request and answer shapes (checked field by field against
tests/clients/shapes, written from their documentation), the same labels and probabilities
as /v1/sentiment, truncation per request on every API that has a field for it, and a long
text refused with its token count and the limit on every route."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from sentiserve.engine.tokenizer import Truncation
from sentiserve.serve.app import Server
from sentiserve.serve.rest_classify import ClassifyFormat
from tests.integration.serving import in_process

SHAPES = Path(__file__).resolve().parents[1] / "clients" / "shapes"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess"]
PAIRS = ["what a film", "not at all", "it was fine"]
MAX_LENGTH = 64  # the tiny build's
LONG = "bad " * 100 + "good " * 100  # 202 tokens with [CLS] and [SEP]: one token per word


@dataclass
class App:
    server: Server
    http: httpx.AsyncClient
    grpc: Any  # GRPCInferenceServiceStub on an aio channel

    async def post(self, path: str, body: object, **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, json=body, **kwargs)

    async def v1(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        answer = await self.post("/v1/sentiment", body)
        assert answer.status_code == 200, answer.text
        results: list[dict[str, Any]] = answer.json()["results"]
        return results


async def open_app(tiny_build: Path, **config: Any) -> AsyncIterator[App]:
    async with in_process(tiny_build / "model_repository", **config) as (server, http, stub):
        yield App(server, http, stub)


@pytest.fixture
async def app(tiny_build: Path) -> AsyncIterator[App]:
    async for opened in open_app(tiny_build):
        yield opened


def same_shape(
    ours: Any, theirs: Any, where: str = "$", extra: frozenset[str] = frozenset()
) -> None:
    """``ours`` has the fields of ``theirs`` (and no others but ``extra``), each with the same
    JSON type (a null in theirs allows anything; lists are compared by their first item)."""
    if theirs is None:
        return
    if isinstance(theirs, bool) or isinstance(ours, bool):
        assert isinstance(ours, bool), f"{where}: {ours!r} is not a boolean"
        assert isinstance(theirs, bool), f"{where}: {ours!r} is a boolean"
    elif isinstance(theirs, int | float):
        assert isinstance(ours, int | float), f"{where}: {ours!r} is not a number"
        if isinstance(theirs, int):
            assert isinstance(ours, int), f"{where}: {ours!r} is not an integer"
    elif isinstance(theirs, str):
        assert isinstance(ours, str), f"{where}: {ours!r} is not a string"
    elif isinstance(theirs, list):
        assert isinstance(ours, list), f"{where}: {ours!r} is not a list"
        assert ours, f"{where}: empty"
        same_shape(ours[0], theirs[0], f"{where}[0]", extra)
    else:
        assert isinstance(ours, dict), f"{where}: {ours!r} is not an object"
        assert set(ours) - extra == set(theirs) or where.endswith(("id2label", "label2id")), (
            f"{where}: fields {sorted(ours)} != {sorted(theirs)}"
        )
        for key in theirs.keys() & ours.keys():
            same_shape(ours[key], theirs[key], f"{where}.{key}", extra)


def shape(name: str) -> Any:
    return json.loads((SHAPES / name).read_text())


def by_label(items: list[dict[str, Any]]) -> dict[str, float]:
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True), "highest first"
    return {item["label"]: item["score"] for item in items}


def assert_same_scores(got: list[dict[str, float]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for mine, reference in zip(got, want, strict=True):
        assert mine.keys() == reference["scores"].keys()
        for label, score in mine.items():
            assert abs(score - reference["scores"][label]) <= 1e-6, (label, score, reference)


async def test_every_route_gives_v1s_labels_and_probabilities(app: App) -> None:
    want = await app.v1({"texts": TEXTS})
    tei = (await app.post("/predict", {"inputs": [[t] for t in TEXTS]})).json()
    assert_same_scores([by_label(row) for row in tei], want)
    one = (await app.post("/", {"inputs": TEXTS[0]})).json()
    assert_same_scores([by_label(one)], want[:1])
    hf = (await app.post("/models/sentiment", {"inputs": TEXTS, "parameters": {}})).json()
    assert_same_scores([by_label(row) for row in hf], want)
    hf_root = (await app.post("/", {"inputs": TEXTS[1], "parameters": {}})).json()
    assert_same_scores([by_label(row) for row in hf_root], want[1:2])
    labels = list(want[0]["scores"])
    for path in ("/v1/classify", "/classify"):
        doc = (await app.post(path, {"input": TEXTS, "model": "sentiment"})).json()
        rows = [dict(zip(labels, d["probs"], strict=True)) for d in doc["data"]]
        assert_same_scores(rows, want)
        assert [d["label"] for d in doc["data"]] == [w["label"] for w in want]
        assert [d["index"] for d in doc["data"]] == [0, 1, 2]

    # Pairs, where the peer has them: TEI's [text, text_pair] and the Inference API's dict.
    paired = await app.v1({"texts": TEXTS, "text_pairs": PAIRS})
    tei_pairs = (
        await app.post("/predict", {"inputs": [list(p) for p in zip(TEXTS, PAIRS, strict=True)]})
    ).json()
    assert_same_scores([by_label(row) for row in tei_pairs], paired)
    assert_same_scores(
        [by_label((await app.post("/predict", {"inputs": [TEXTS[0], PAIRS[0]]})).json())],
        paired[:1],
    )
    hf_pair = {"inputs": {"text": TEXTS[2], "text_pair": PAIRS[2]}, "parameters": {}}
    assert_same_scores(
        [by_label((await app.post("/models/sentiment", hf_pair)).json()[0])], paired[2:]
    )


async def test_answers_have_the_peers_fields(app: App) -> None:
    same_shape((await app.post("/predict", {"inputs": TEXTS[0]})).json(), shape("tei_predict.json"))
    batch = (await app.post("/predict", {"inputs": [[t] for t in TEXTS]})).json()
    same_shape(batch, shape("tei_predict_batch.json"))
    answer = await app.post("/predict", {"inputs": []})
    assert answer.status_code == 400
    same_shape(answer.json(), shape("tei_error.json"))
    assert answer.json()["error_type"] == "Empty"
    same_shape(
        (await app.http.get("/info")).json(),
        shape("tei_info.json"),
        extra=frozenset({"sentiserve"}),
    )
    hf = (await app.post("/", {"inputs": TEXTS[0], "parameters": {}})).json()
    same_shape(hf, shape("hf_text_classification.json"))
    vllm = await app.post("/v1/classify", {"input": TEXTS[0], "model": "sentiment"})
    same_shape(vllm.json(), shape("vllm_classify.json"))
    assert vllm.json()["usage"]["prompt_tokens"] == int(vllm.json()["usage"]["total_tokens"]) > 0
    missing = await app.post("/v1/classify", {"input": TEXTS[0], "model": "nope"})
    assert missing.status_code == 404
    same_shape(missing.json(), shape("vllm_error.json"))
    assert missing.json()["error"]["type"] == "NotFoundError"
    # TEI's compute headers on its routes.
    tei = await app.post("/predict", {"inputs": TEXTS[0]})
    assert int(tei.headers["x-compute-characters"]) == len(TEXTS[0])
    assert int(tei.headers["x-compute-tokens"]) > 2
    assert float(tei.headers["x-total-time"]) >= 0


async def test_options_the_peers_have(app: App) -> None:
    want = await app.v1({"text": TEXTS[0]})
    top = (await app.post("/", {"inputs": TEXTS[0], "parameters": {"top_k": 1}})).json()
    assert [[item["label"] for item in row] for row in top] == [[want[0]["label"]]]
    raw = (await app.post("/predict", {"inputs": TEXTS[0], "raw_scores": True})).json()
    none = (
        await app.post(
            "/models/sentiment", {"inputs": TEXTS[0], "parameters": {"function_to_apply": "none"}}
        )
    ).json()[0]
    assert by_label(raw) == pytest.approx(by_label(none), abs=1e-6)
    assert any(abs(s) > 1 or s < 0 for s in by_label(raw).values()), "logits, not probabilities"
    soft = (
        await app.post(
            "/models/sentiment",
            {"inputs": TEXTS[0], "parameters": {"function_to_apply": "softmax"}},
        )
    ).json()[0]
    logits = by_label(raw)
    total = sum(math.exp(v) for v in logits.values())
    assert by_label(soft) == pytest.approx(
        {k: math.exp(v) / total for k, v in logits.items()}, abs=1e-6
    )
    bad = await app.post(
        "/models/sentiment", {"inputs": TEXTS[0], "parameters": {"function_to_apply": "relu"}}
    )
    assert bad.status_code == 422
    assert "softmax, sigmoid or none" in bad.json()["error"]


async def test_each_request_chooses_how_a_long_text_is_cut(app: App) -> None:
    tail = await app.v1({"text": "good " * (MAX_LENGTH - 2)})
    head = await app.v1({"text": "bad " * (MAX_LENGTH - 2)})
    assert tail[0]["scores"] != head[0]["scores"]
    (left,) = await app.v1({"text": LONG, "truncation_direction": "left"})
    (right,) = await app.v1({"text": LONG, "truncate": True})
    assert (left["tokens"], left["truncated"], right["truncated"]) == (202, True, True)
    assert_same_scores([left["scores"]], tail)
    assert_same_scores([right["scores"]], head)
    (short,) = await app.v1({"text": "good film"})
    assert (short["tokens"], short["truncated"]) == (4, False)

    tei = await app.post(
        "/predict", {"inputs": LONG, "truncate": True, "truncation_direction": "Left"}
    )
    assert_same_scores([by_label(tei.json())], tail)
    assert tei.headers["x-sentiserve-input-tokens"] == "202"
    assert tei.headers["x-sentiserve-truncated"] == "1"
    assert tei.headers["x-compute-tokens"] == str(MAX_LENGTH)
    # vLLM keeps the last k tokens.
    vllm = (await app.post("/v1/classify", {"input": LONG, "truncate_prompt_tokens": 10})).json()
    (ten,) = await app.v1({"text": "good " * 8})
    assert_same_scores([dict(zip(ten["scores"], vllm["data"][0]["probs"], strict=True))], [ten])
    assert vllm["usage"]["prompt_tokens"] == 10
    # KServe v2: request parameters, over REST and gRPC.
    v2 = await app.post(
        "/v2/models/sentiment/infer",
        {
            "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [LONG]}],
            "parameters": {"truncation_direction": "left"},
        },
    )
    assert v2.status_code == 200, v2.text
    probabilities = next(o for o in v2.json()["outputs"] if o["name"] == "PROBABILITIES")["data"]
    assert_same_scores([dict(zip(tail[0]["scores"], probabilities, strict=True))], tail)
    assert (v2.headers["x-sentiserve-input-tokens"], v2.headers["x-sentiserve-truncated"]) == (
        "202",
        "1",
    )
    reply = await app.grpc.ModelInfer(grpc_infer(LONG, direction="left"))
    grpc_probs = np.frombuffer(
        reply.raw_output_contents[[o.name for o in reply.outputs].index("PROBABILITIES")],
        dtype=np.float32,
    )
    assert_same_scores([dict(zip(tail[0]["scores"], grpc_probs.tolist(), strict=True))], tail)


def grpc_infer(text: str, *, truncate: bool | None = None, direction: str | None = None) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="TEXT",
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[text.encode()]),
    )
    request = pb.ModelInferRequest(model_name="sentiment", inputs=[tensor])
    if truncate is not None:
        request.parameters["truncate"].bool_param = truncate
    if direction is not None:
        request.parameters["truncation_direction"].string_param = direction
    return request


REFUSED = "202 tokens; this model takes at most 64"


async def test_a_long_text_refused_names_its_tokens_and_the_limit_on_every_route(app: App) -> None:
    asked = {
        "/v1/sentiment": ({"text": LONG, "truncate": False}, 400),
        "/v2/models/sentiment/infer": (
            {
                "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [LONG]}],
                "parameters": {"truncate": False},
            },
            400,
        ),
        "/predict": ({"inputs": LONG, "truncate": False}, 422),
        "/": ({"inputs": [LONG], "truncate": False}, 422),
    }
    for path, (body, status) in asked.items():
        answer = await app.post(path, body)
        assert answer.status_code == status, (path, answer.text)
        assert REFUSED in answer.text, (path, answer.text)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await app.grpc.ModelInfer(grpc_infer(LONG, truncate=False))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert REFUSED in (caught.value.details() or "")

    # A model whose own policy refuses: every route refuses, those without a field too.
    model = app.server.plane.registry.get("sentiment")  # type: ignore[attr-defined]
    model.served.tokenizer.truncation = Truncation.REJECT
    default = {
        "/v1/sentiment": ({"text": LONG}, 400),
        "/predict": ({"inputs": LONG}, 422),
        "/": ({"inputs": LONG, "parameters": {}}, 422),
        "/models/sentiment": ({"inputs": LONG, "parameters": {}}, 422),
        "/v1/classify": ({"input": LONG}, 400),
        "/classify": ({"input": [LONG]}, 400),
    }
    for path, (body, status) in default.items():
        answer = await app.post(path, body)
        assert answer.status_code == status, (path, answer.text)
        assert REFUSED in answer.text, (path, answer.text)
    info = (await app.http.get("/info")).json()
    assert info["auto_truncate"] is False
    # ... and a request may still ask for a cut.
    assert (await app.post("/predict", {"inputs": LONG, "truncate": True})).status_code == 200


async def test_info_describes_the_served_model(app: App) -> None:
    info = (await app.http.get("/info")).json()
    labels = list((await app.v1({"text": "fine"}))[0]["scores"])
    assert info["model_id"] == "sentiment"
    assert info["model_type"]["classifier"]["id2label"] == {str(i): n for i, n in enumerate(labels)}
    assert info["max_input_length"] == MAX_LENGTH
    assert info["auto_truncate"] is True
    assert info["max_client_batch_size"] == 256
    assert info["sentiserve"]["truncation"] == "head_tail"


async def test_bad_bodies_get_the_peers_errors(app: App) -> None:
    cases = [
        ("/predict", b"{", 422, "error_type"),
        ("/predict", b'{"inputs": ["a", "b", "c"]}', 422, "error_type"),
        ("/predict", b'{"inputs": 3}', 422, "error_type"),
        ("/predict", b'{"inputs": "x", "truncation_direction": "up"}', 422, "error_type"),
        ("/", b"[1, 2]", 422, "error_type"),
        ("/models/sentiment", b'{"inputs": "x", "parameters": {"top_k": 0}}', 422, "error_type"),
        ("/models/nope", b'{"inputs": "x", "parameters": {}}', 404, "error_type"),
        ("/v1/classify", b'{"input": []}', 400, "error"),
        ("/v1/classify", b'{"input": "x", "truncate_prompt_tokens": -5}', 400, "error"),
        ("/classify", b'{"model": "x"}', 400, "error"),
        ("/v1/sentiment", b'{"text": "x", "truncation_direction": "up"}', 400, "error"),
    ]
    for path, body, status, key in cases:
        answer = await app.http.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == status, (path, body, answer.text)
        assert key in answer.json(), (path, answer.text)
    answer = await app.http.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    assert answer.json()["error_type"] == "Validation"


async def test_classify_answers_as_infinity_when_set(tiny_build: Path) -> None:
    async for app in open_app(tiny_build, classify_format=ClassifyFormat.INFINITY):
        want = await app.v1({"texts": TEXTS})
        body = {"input": TEXTS, "model": "default/not-specified", "raw_scores": False}
        doc = (await app.post("/classify", body)).json()
        same_shape(doc, shape("infinity_classify.json"))
        assert doc["id"].startswith("infinity-")
        assert_same_scores([by_label(row) for row in doc["data"]], want)
        vllm = (await app.post("/v1/classify", body)).json()
        assert vllm["object"] == "list", "/v1/classify stays vLLM's"

        # Infinity's own client, over the same in-process app.
        from infinity_client import Client
        from infinity_client.api.default import classify
        from infinity_client.models import ClassifyInput, ClassifyResult

        client = Client(base_url="http://t").set_async_httpx_client(app.http)
        result = await classify.asyncio(client=client, body=ClassifyInput(input_=TEXTS))
        assert isinstance(result, ClassifyResult), result
        rows = [{item.label: item.score for item in row} for row in result.data]
        assert_same_scores(rows, want)
        assert result.usage.prompt_tokens > 0


async def test_the_policy_guards_the_new_routes_in_their_own_error_format(tiny_build: Path) -> None:
    async for app in open_app(tiny_build, api_key="compat-key-123"):
        tei = await app.post("/predict", {"inputs": "x"})
        assert tei.status_code == 401
        assert tei.json()["error_type"] == "Unauthorized"
        vllm = await app.post("/v1/classify", {"input": "x"})
        assert vllm.status_code == 401
        assert vllm.json()["error"]["type"] == "AuthenticationError"
        ok = await app.post(
            "/predict", {"inputs": "x"}, headers={"authorization": "Bearer compat-key-123"}
        )
        assert ok.status_code == 200


async def test_answers_are_counted_for_prediction_monitoring(app: App) -> None:
    """Every route records the labels it gave, each text's top score, its tokens and the
    texts cut: the metrics the label-share and length rules read."""
    metrics = app.server.metrics
    want = await app.v1({"texts": TEXTS})
    await app.post("/predict", {"inputs": [[t] for t in TEXTS]})
    await app.post("/v1/classify", {"input": [LONG]})  # cut by the model's policy
    (long_label,) = [r["label"] for r in await app.v1({"text": LONG})]
    exposition = metrics.exposition().decode()

    def sample(name: str, **labels: str) -> float:
        wanted = {"model": "sentiment", "version": "1", **labels}
        total = 0.0
        for line in exposition.splitlines():
            if not line.startswith(name + "{"):
                continue
            found = dict(
                part.split("=", 1) for part in line[len(name) + 1 : line.index("}")].split(",")
            )
            if all(found.get(k) == f'"{v}"' for k, v in wanted.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    given = [w["label"] for w in want] * 2 + [long_label, long_label]
    for label in set(given):
        assert sample("sentiserve_predictions_total", label=label) == given.count(label), label
    assert sample("sentiserve_prediction_score_count") == len(given)
    assert sample("sentiserve_input_tokens_count") == len(given)
    assert sample("sentiserve_input_tokens_bucket", le="128.0") == len(given) - 2
    assert sample("sentiserve_truncated_inputs_total") == 2
