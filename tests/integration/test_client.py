"""`sentiserve.client` against a real server: one text or many, the API key, errors as the
project's types, retries that honour Retry-After on 503, deadlines, and the async client."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sentiserve.client import AsyncClient, Client, Prediction, RetryPolicy
from sentiserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    QueueFullError,
    UnauthorizedError,
    UnavailableError,
)
from tests.integration.serving import Running, free_port, start_server, stop

KEY = "client-test-key"
TEXTS = ["a wonderful, moving film", "boring and dull", "the plot was a mess"]


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(
        tiny_build / "model_repository",
        "--max-in-flight",
        "1",
        "--instances",
        "1",
        env={"SENTISERVE_API_KEY": KEY},
    )
    yield running
    stop(running)


def test_one_text_and_many_match_the_api(server: Running) -> None:
    raw = httpx.post(
        f"{server.url}/v1/sentiment",
        json={"texts": TEXTS},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    with Client(server.url, api_key=KEY) as client:
        assert client.ready()
        one = client.classify(TEXTS[0])
        many = client.classify_many(TEXTS)
    assert isinstance(one, Prediction)
    assert one.label == raw["results"][0]["label"]
    assert many.model == "sentiment"
    assert many.version == raw["version"]
    assert [p.label for p in many.predictions] == [r["label"] for r in raw["results"]]
    assert many.predictions[1].scores == pytest.approx(raw["results"][1]["scores"])


def test_errors_are_the_projects_types(server: Running) -> None:
    with Client(server.url, api_key="wrong-key-123") as client, pytest.raises(UnauthorizedError):
        client.classify("fine")
    with Client(server.url, api_key=KEY) as client:
        with pytest.raises(InvalidInputError, match="text 0 is empty"):
            client.classify("   ")
        with pytest.raises(ModelNotFoundError, match="nope"):
            client.classify("fine", model="nope")
    long_texts = [" ".join(["a long and winding review"] * 40)] * 64
    with (
        Client(server.url, api_key=KEY, timeout_s=0.002) as client,
        pytest.raises(DeadlineExceededError),
    ):
        client.classify_many(long_texts)


@pytest.fixture
def one_at_a_time(tiny_build: Path) -> Iterator[Running]:
    """A server of its own: no request left over from another test is inside it."""
    running = start_server(
        tiny_build / "model_repository", "--max-in-flight", "1", env={"SENTISERVE_API_KEY": KEY}
    )
    yield running
    stop(running)


def test_a_503_is_retried_after_retry_after(one_at_a_time: Running) -> None:
    """With --max-in-flight 1, a request whose body is still arriving fills the server: the
    next one gets 503 with Retry-After: 1. Without retries the client raises; with them it
    waits that long (the slow request completes meanwhile) and succeeds."""
    server = one_at_a_time
    body = b'{"text": "held open"}'
    head = (
        b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    held = socket.create_connection(("127.0.0.1", server.http_port))
    held.sendall(head + body[:5])  # the server reads its body: it is in flight
    try:
        with Client(server.url, api_key=KEY, retry=RetryPolicy(attempts=1)) as client:
            refusal = None
            for _ in range(100):  # until the held request is inside the server
                try:
                    client.classify("probe")
                except QueueFullError as exc:
                    refusal = exc
                    break
            assert refusal is not None, "the server never refused a second request"
            assert "in flight" in str(refusal)
        release = threading.Timer(0.5, lambda: held.sendall(body[5:]))
        release.start()
        start = time.monotonic()
        with Client(server.url, api_key=KEY, timeout_s=30) as client:
            assert client.classify("a good film").label
        assert time.monotonic() - start >= 0.9, "Retry-After: 1 was not honoured"
        release.join()
        assert b"200 OK" in held.recv(4096)
    finally:
        held.close()


def test_unreachable_server_is_unavailable_after_retries() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    retry = RetryPolicy(attempts=3, backoff_s=0.05)
    with Client(dead, retry=retry) as client, pytest.raises(UnavailableError, match="cannot reach"):
        client.classify("fine")
    assert 0.1 < time.monotonic() - start < 5
    assert not Client(dead).ready()


def test_async_client_runs_concurrent_calls(server: Running) -> None:
    async def main() -> list[str]:
        async with AsyncClient(server.url, api_key=KEY, timeout_s=30) as client:
            assert await client.ready()
            results = await asyncio.gather(*(client.classify(t) for t in TEXTS * 4))
            return [r.label for r in results]

    labels = asyncio.run(main())
    with Client(server.url, api_key=KEY) as client:
        expected = [p.label for p in client.classify_many(TEXTS).predictions]
    assert labels == expected * 4
