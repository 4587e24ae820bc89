"""Payload logging through the real server (built in process, real engines on the tiny
model) into real sinks: an HTTP receiver decoding KServe's CloudEvents, a folder, and moto's
S3. Every API's answers are logged with the request id; a dead or slow sink never fails a
request, and what it lost is counted exactly; `sentiserve drift` reads the files back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentiserve.cli import build_app
from sentiserve.errors import ConfigError
from sentiserve.serve.payload_sinks import BATCH_CONTENT_TYPE, read_events
from sentiserve.serve.payloads import REQUEST_TYPE, RESPONSE_TYPE, PayloadLogConfig
from tests.integration.serving import free_port, in_process
from tests.integration.test_compat import grpc_infer

TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess", "fine"]


class Receiver:
    """A CloudEvents HTTP sink: records each POST's ce-* headers and JSON body; ``delay_s``
    makes it slow."""

    def __init__(self, port: int | None = None, delay_s: float = 0.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        lock = threading.Lock()
        events = self.events
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # One connection per event: a stopped receiver refuses the next one at once.
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(delay_s)
                if self.headers["content-type"] == BATCH_CONTENT_TYPE:
                    # Batched content mode: structured events, the same fields.
                    batch = [
                        {**e, "content-type": e.pop("datacontenttype")} for e in json.loads(body)
                    ]
                else:
                    event = {
                        k[3:]: v for k, v in self.headers.items() if k.lower().startswith("ce-")
                    }
                    event["content-type"] = self.headers["content-type"]
                    event["data"] = json.loads(body)
                    batch = [event]
                with lock:
                    events.extend(batch)
                    receiver.posts += 1
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    sink = Receiver()
    yield sink
    sink.stop()


def dropped(metrics: Any, reason: str) -> float:
    name = "sentiserve_payload_events_dropped_total"
    return float(metrics.registry.get_sample_value(name, {"reason": reason}) or 0.0)


def sent(metrics: Any) -> float:
    return float(metrics.registry.get_sample_value("sentiserve_payload_events_sent_total") or 0)


async def test_every_api_is_logged_with_its_request_id(
    tiny_build: Path, receiver: Receiver
) -> None:
    config = PayloadLogConfig(receiver.url)
    async with in_process(tiny_build / "model_repository", payload_log=config) as (
        server,
        http,
        stub,
    ):
        limit = asyncio.Semaphore(32)
        routes = [
            ("/v1/sentiment", lambda t: {"texts": [t]}),
            ("/predict", lambda t: {"inputs": t}),
            ("/v1/classify", lambda t: {"input": t, "model": "sentiment"}),
            ("/v2/models/sentiment/infer", lambda t: v2_body(t)),
        ]

        async def one(i: int) -> str:
            path, body = routes[i % len(routes)]
            headers = {"x-request-id": f"client-{i}"} if i % 5 else {}
            async with limit:
                answer = await http.post(path, json=body(TEXTS[i % 4]), headers=headers)
            assert answer.status_code == 200, answer.text
            return answer.headers["x-request-id"]

        ids = await asyncio.gather(*(one(i) for i in range(1000)))
        call = stub.ModelInfer(grpc_infer(TEXTS[0]), metadata=(("x-request-id", "grpc-1"),))
        await call
        assert server.plane.payloads is not None
        await asyncio.to_thread(server.plane.payloads.close)
    assert len(set(ids)) == 1000
    assert sum(i.startswith("client-") for i in ids) == 800, "the client's ids are kept"
    requests = [e for e in receiver.events if e["type"] == REQUEST_TYPE]
    responses = [e for e in receiver.events if e["type"] == RESPONSE_TYPE]
    assert len(requests) == len(responses) == 1001
    assert sorted(e["id"] for e in requests) == sorted([*ids, "grpc-1"])
    assert sorted(e["id"] for e in responses) == sorted([*ids, "grpc-1"])
    first = next(e for e in requests if e["id"] == "client-1")
    assert first["specversion"] == "1.0"
    assert first["content-type"] == "application/json"
    assert first["inferenceservicename"] == "sentiment"
    assert first["data"] == {"texts": [TEXTS[1]]}
    answer = next(e for e in responses if e["id"] == "client-1")["data"]
    assert answer["labels"][0] in answer["label_names"]
    assert answer["tokens"][0] > 2
    assert sum(answer["probabilities"][0]) == pytest.approx(1.0, abs=1e-5)
    assert sent(server.metrics) == 2002


async def test_a_batching_http_sink_gets_the_same_events_in_few_posts(
    tiny_build: Path, receiver: Receiver
) -> None:
    config = PayloadLogConfig(receiver.url, batch=True, batch_events=100, flush_s=0.2)
    async with in_process(tiny_build / "model_repository", payload_log=config) as (server, http, _):
        ids = []
        for i in range(200):
            headers = {"x-request-id": f"b{i}"}
            answer = await http.post("/v1/sentiment", json={"text": TEXTS[i % 4]}, headers=headers)
            assert answer.status_code == 200
            ids.append(answer.headers["x-request-id"])
        await asyncio.to_thread(server.plane.payloads.close)
    assert sorted(e["id"] for e in receiver.events if e["type"] == REQUEST_TYPE) == sorted(ids)
    assert sorted(e["id"] for e in receiver.events if e["type"] == RESPONSE_TYPE) == sorted(ids)
    first = next(e for e in receiver.events if e["id"] == "b1" and e["type"] == REQUEST_TYPE)
    assert first["specversion"] == "1.0"
    assert first["content-type"] == "application/json"
    assert first["data"] == {"texts": [TEXTS[1]]}
    assert receiver.posts <= 40, f"{receiver.posts} POSTs for 400 events"
    assert sent(server.metrics) == 400


def v2_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [text]}]}


async def test_a_dead_sink_fails_no_request_and_every_loss_is_counted(
    tiny_build: Path, receiver: Receiver
) -> None:
    config = PayloadLogConfig(receiver.url, batch_events=20, flush_s=0.05)
    async with in_process(tiny_build / "model_repository", payload_log=config) as (
        server,
        http,
        _,
    ):
        log = server.plane.payloads
        metrics = server.metrics

        async def send(n: int) -> None:
            for i in range(n):
                answer = await http.post("/v1/sentiment", json={"text": TEXTS[i % 4]})
                assert answer.status_code == 200

        async def settle(events: int) -> None:  # until the sink took or lost them all
            for _ in range(400):
                if sent(metrics) + dropped(metrics, "sink_error") >= events:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the payload log did not ship its events")

        await send(100)
        await settle(200)
        receiver.stop()
        await send(150)
        await settle(500)
        assert dropped(metrics, "sink_error") > 0, "the dead sink's losses are counted"
        back = Receiver(receiver.port)
        try:
            await send(50)
            await asyncio.to_thread(log.close)
        finally:
            back.stop()
    got = len(receiver.events) + len(back.events)
    assert dropped(metrics, "sink_error") + dropped(metrics, "queue_full") == 600 - got
    assert sent(metrics) == got
    assert len(back.events) == 100, "the sink that came back gets what came after"


async def test_a_slow_sink_drops_at_a_full_queue_rather_than_wait(tiny_build: Path) -> None:
    slow = Receiver(delay_s=0.05)
    config = PayloadLogConfig(slow.url, queue_size=10, batch_events=5, flush_s=0.01)
    try:
        async with in_process(tiny_build / "model_repository", payload_log=config) as (
            server,
            http,
            _,
        ):
            start = time.perf_counter()
            for i in range(100):
                answer = await http.post("/v1/sentiment", json={"text": TEXTS[i % 4]})
                assert answer.status_code == 200
            took = time.perf_counter() - start
            await asyncio.to_thread(server.plane.payloads.close)
            metrics = server.metrics
    finally:
        slow.stop()
    # 200 events at 50 ms each would take 10 s; the requests did not wait for them.
    assert took < 5
    full = dropped(metrics, "queue_full")
    assert full > 100
    assert full + len(slow.events) + dropped(metrics, "sink_error") == 200


async def test_folder_log_is_sampled_redacted_whole_and_read_by_drift(
    tiny_build: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "payloads"
    config = PayloadLogConfig(str(folder), sample=0.5, redact=True, batch_events=50)
    async with in_process(tiny_build / "model_repository", payload_log=config) as (server, http, _):
        for i in range(400):
            body = {"texts": [TEXTS[i % 4], TEXTS[(i + 1) % 4]]}
            answer = await http.post("/v1/sentiment", json=body)
            assert answer.status_code == 200
        await asyncio.to_thread(server.plane.payloads.close)
    assert not list(folder.glob(".*")), "no partial file is left"
    events = list(read_events([folder]))
    requests = [e for e in events if e["type"] == REQUEST_TYPE]
    assert 140 <= len(requests) <= 260, "about half the requests are kept"
    assert len(events) == 2 * len(requests)
    digest = "sha256:" + hashlib.sha256(TEXTS[0].encode()).hexdigest()
    seen = {t for e in requests for t in e["data"]["texts"]}
    assert digest in seen
    assert not seen & set(TEXTS), "no text is logged when redacted"

    result = CliRunner().invoke(
        build_app(),
        [
            "drift",
            str(folder),
            "--model-repository",
            str(tiny_build / "model_repository"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == "sentiment"
    assert report["texts"] == 2 * len(requests)
    assert {row["name"] for row in report["labels"]} >= {"negative", "positive"}
    assert sum(row["actual"] for row in report["labels"]) == pytest.approx(1.0)
    assert report["median_tokens"] > 2
    assert report["label_psi"] >= 0


async def test_parquet_files_hold_the_same_events_and_drift_reads_them(
    tiny_build: Path, tmp_path: Path
) -> None:
    repo = tiny_build / "model_repository"
    logs = {}
    for kind in ("jsonl", "parquet"):
        folder = tmp_path / kind
        config = PayloadLogConfig(str(folder), batch_events=30, format=kind)
        async with in_process(repo, payload_log=config) as (server, http, _):
            for i in range(40):
                headers = {"x-request-id": f"r{i}"}
                body = {"texts": [TEXTS[i % 4]]}
                assert (await http.post("/v1/sentiment", json=body, headers=headers)).is_success
            await asyncio.to_thread(server.plane.payloads.close)
        assert {p.suffix for p in folder.iterdir()} == {f".{kind}"}
        logs[kind] = list(read_events([folder]))

    def comparable(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((e["id"], e["type"], json.dumps(e["data"], sort_keys=True)) for e in events)

    assert len(logs["parquet"]) == 80
    assert comparable(logs["parquet"]) == comparable(logs["jsonl"])
    result = CliRunner().invoke(
        build_app(), ["drift", str(tmp_path / "parquet"), "--model-repository", str(repo), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["texts"] == 40
    with pytest.raises(ConfigError, match="parquet is for files"):
        PayloadLogConfig("http://sink/events", format="parquet")
    with pytest.raises(ConfigError, match="jsonl or parquet"):
        PayloadLogConfig(str(tmp_path), format="csv")


def test_drift_refuses_a_log_without_answers(tiny_build: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text('{"type": "other"}\n')
    (tmp_path / "bad.jsonl").write_text("not json\n")
    runner, app = CliRunner(), build_app()
    repo = ["--model-repository", str(tiny_build / "model_repository")]
    empty = runner.invoke(app, ["drift", str(tmp_path / "empty.jsonl"), *repo])
    assert empty.exit_code != 0
    assert "no answers" in empty.output
    bad = runner.invoke(app, ["drift", str(tmp_path / "bad.jsonl"), *repo])
    assert bad.exit_code != 0
    assert "bad.jsonl:1: not a JSON event" in bad.output
    missing = runner.invoke(app, ["drift", str(tmp_path / "nope"), *repo])
    assert missing.exit_code != 0
    assert "does not exist" in missing.output


def test_a_target_of_unknown_scheme_is_a_clear_error() -> None:
    from sentiserve.errors import ConfigError
    from sentiserve.serve.payload_sinks import open_sink

    with pytest.raises(ConfigError, match="expected http"):
        open_sink("ftp://host/x")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        PayloadLogConfig("x", sample=1.5)


async def test_an_s3_prefix_receives_the_files_and_drift_reads_them(
    tiny_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from tests.integration.test_s3 import CREDENTIALS, Moto, _keys

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    moto = Moto()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        s3 = boto3.client("s3", endpoint_url=moto.url, **_keys())
        s3.create_bucket(Bucket="logs")
        config = PayloadLogConfig("s3://logs/sentiment/payloads", batch_events=40)
        repo = tiny_build / "model_repository"
        async with in_process(repo, payload_log=config) as (server, http, _):
            for i in range(60):
                answer = await http.post("/predict", json={"inputs": TEXTS[i % 4]})
                assert answer.status_code == 200
            await asyncio.to_thread(server.plane.payloads.close)
        listed = s3.list_objects_v2(Bucket="logs", Prefix="sentiment/payloads/")["Contents"]
        assert len(listed) == 3  # 120 events in batches of at most 40
        assert all(o["Key"].endswith(".jsonl") for o in listed)
        runner = CliRunner()
        result = runner.invoke(
            build_app(),
            ["drift", "s3://logs/sentiment/payloads", "--model-repository", str(repo), "--json"],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["texts"] == 60
        assert report["events"] == 60
    finally:
        moto.stop()
