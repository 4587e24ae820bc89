"""The HTTP edge, in process (httpx's ASGI transport): request ids, the API key, overload
refusals before the body is read, body limits and timeouts, media types, and that anything
else reaches the app behind it. The inference handlers here are the test's own."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from sentiserve.errors import InvalidInputError
from sentiserve.serve.auth import ApiKeys
from sentiserve.serve.edge import (
    WATCH_AFTER_S,
    Call,
    Edge,
    Reply,
    Route,
    check_content_type,
    compile_path,
    http_operation,
)
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.policy import Operation, Policy, RequestIds, TransportLimits

KEY = "edge-key-123"


async def downstream(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the edge: answers 200 "app" to anything."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app"})


class Anything(BaseModel):
    pass


def make_edge(handler: Any, **kwargs: Any) -> Edge:
    route = Route(
        "/v1/sentiment",
        handler,
        operation_id="t",
        summary="t",
        request_model=Anything,
        response_model=Anything,
        tag="t",
    )
    options: dict[str, Any] = {"max_in_flight": 4, "max_body_bytes": 100}
    options.update(kwargs)
    keys = options.pop("keys", ApiKeys())
    return Edge(downstream, [route], Policy(keys, TransportLimits(**options), Metrics()))


async def echo(call: Call) -> Reply:
    check_content_type(call, "application/json")
    if call.body == b"bad":
        raise InvalidInputError("bad body")
    if call.body == b"crash":
        raise RuntimeError("a bug")
    return Reply(200, b'{"echo": ' + str(len(call.body)).encode() + b"}")


def client(edge: Edge) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://t")


async def test_routes_go_to_handlers_and_the_rest_to_the_app() -> None:
    async with client(make_edge(echo)) as c:
        r = await c.post("/v1/sentiment", content=b"hello")
        assert (r.status_code, r.json()) == (200, {"echo": 5})
        assert (await c.get("/v1/sentiment")).text == "app", "only POST is an inference route"
        assert (await c.get("/v2/health/ready")).text == "app"


async def test_request_ids_are_echoed_or_made_unique() -> None:
    async with client(make_edge(echo)) as c:
        given = await c.post("/v1/sentiment", content=b"x", headers={"x-request-id": "abc"})
        assert given.headers["x-request-id"] == "abc"
        made = {
            (await c.post("/v1/sentiment", content=b"x")).headers["x-request-id"] for _ in range(5)
        }
        assert len(made) == 5
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
        assert (await c.get("/other")).headers["x-request-id"]


def test_request_ids_never_repeat() -> None:
    ids = RequestIds()
    assert len({ids.next() for _ in range(10_000)}) == 10_000


async def test_errors_are_one_line_json_and_never_tracebacks() -> None:
    async with client(make_edge(echo)) as c:
        bad = await c.post("/v1/sentiment", content=b"bad")
        assert (bad.status_code, bad.json()) == (400, {"error": "bad body"})
        crash = await c.post("/v1/sentiment", content=b"crash")
        assert crash.status_code == 500
        assert crash.json() == {"error": "internal error; see the server log"}
        typed = await c.post("/v1/sentiment", content=b"x", headers={"content-type": "text/plain"})
        assert typed.status_code == 415


async def test_api_key_guards_inference() -> None:
    async with client(make_edge(echo, keys=ApiKeys(KEY))) as c:
        denied = await c.post("/v1/sentiment", content=b"x")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        ok = await c.post("/v1/sentiment", content=b"x", headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert (await c.get("/v2/health/ready")).status_code == 200


async def test_bodies_over_the_limit_are_413_declared_or_not() -> None:
    async with client(make_edge(echo)) as c:
        r = await c.post("/v1/sentiment", content=b"x" * 101)
        assert r.status_code == 413

        async def chunks():  # no Content-Length: streamed, counted as it arrives
            for _ in range(20):
                yield b"x" * 10

        streamed = await c.post("/v1/sentiment", content=chunks())
        assert streamed.status_code == 413


async def test_beyond_max_in_flight_is_503_before_the_body_is_read() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(call: Call) -> Reply:
        entered.set()
        await release.wait()
        return Reply(200, b"{}")

    edge = make_edge(slow, max_in_flight=1)
    async with client(edge) as c:
        first = asyncio.create_task(c.post("/v1/sentiment", content=b"x"))
        await entered.wait()
        refused = await c.post("/v1/sentiment", content=b"x")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "1 requests in flight" in refused.json()["error"]
        release.set()
        assert (await first).status_code == 200
    assert edge.policy.in_flight == 0
    assert edge.policy.metrics.overload_rejected._value.get() == 1


async def post_raw(edge: Edge, receive: Any) -> list[dict[str, Any]]:
    """``POST /v1/sentiment`` through ``edge`` with the test's own ``receive`` (for what
    httpx cannot do: a body that stalls, a client that leaves); the messages sent back."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/sentiment", "headers": []}
    await edge(scope, receive, send)
    return sent


async def test_a_body_that_stalls_gets_408() -> None:
    edge = make_edge(echo, body_timeout_s=0.2)
    messages = [{"type": "http.request", "body": b"x", "more_body": True}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(10)  # the rest of the body never comes
        return {"type": "http.disconnect"}

    sent = await post_raw(edge, receive)
    assert sent[0]["status"] == 408
    assert b"did not arrive within 0.2 s" in sent[1]["body"]


async def test_a_client_that_leaves_cancels_its_request() -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def waits(call: Call) -> Reply:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Reply(200, b"{}")

    edge = make_edge(waits, max_in_flight=1)
    body = [{"type": "http.request", "body": b"x", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if body:
            return body.pop()
        await entered.wait()  # the client hangs up once its request is inside
        return {"type": "http.disconnect"}

    sent = await asyncio.wait_for(post_raw(edge, receive), 5)
    assert cancelled.is_set(), "the handler was cancelled, not left to finish"
    assert sent == [], "nobody to answer"
    assert edge.policy.in_flight == 0, "its place in the budget is free again"
    counted = edge.policy.metrics.requests.labels("http", "infer", "499")._value.get()
    assert counted == 1


async def test_a_client_that_stays_gets_its_answer() -> None:
    async def quick(call: Call) -> Reply:
        await asyncio.sleep(0.01)  # answered before the edge starts watching
        return Reply(200, b"{}")

    async def slower(call: Call) -> Reply:
        await asyncio.sleep(WATCH_AFTER_S + 0.05)  # watched, and the client stays
        return Reply(200, b"{}")

    for handler in (quick, slower):
        async with client(make_edge(handler)) as c:
            posts = (c.post("/v1/sentiment", content=b"x") for _ in range(3))
            answers = await asyncio.gather(*posts)
        assert [a.status_code for a in answers] == [200, 200, 200]


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, True),
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"application/problem+json", True),
        (b"text/plain", False),
        (b"", False),
    ],
)
def test_content_types(header: bytes | None, ok: bool) -> None:
    call = Call({}, {} if header is None else {b"content-type": header}, b"")
    if ok:
        check_content_type(call, "application/json")
    else:
        with pytest.raises(Exception, match="not accepted here"):
            check_content_type(call, "application/json")


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/v1/sentiment", Operation.INFER),
        ("/v2/models/m/infer", Operation.INFER),
        ("/v2/models/m/versions/2/infer", Operation.INFER),
        ("/v2/repository/index", Operation.REPOSITORY),
        ("/v2/repository/models/m/load", Operation.REPOSITORY),
        ("/v2/models/m/stats", Operation.STATISTICS),
        ("/v2/models/m/versions/1/stats", Operation.STATISTICS),
        ("/v2/health/ready", Operation.HEALTH),
        ("/v2/models/m/ready", Operation.HEALTH),
        ("/v2", Operation.METADATA),
        ("/v2/models/m", Operation.METADATA),
        ("/v2/models/m/versions/3", Operation.METADATA),
        ("/", Operation.OTHER),
        ("/docs", Operation.OTHER),
        ("/v2/models/m/infer/more", Operation.OTHER),
    ],
)
def test_http_paths_map_to_operations(path: str, operation: Operation) -> None:
    assert http_operation(path) is operation


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/v1/sentiment", "/v1/sentiment", {}),
        ("/v1/sentiment", "/v1/sentimentX", None),
        ("/v2/models/{model}/infer", "/v2/models/m.1/infer", {"model": "m.1"}),
        ("/v2/models/{model}/infer", "/v2/models/a/b/infer", None),
        (
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/models/m/versions/2/infer",
            {"model": "m", "version": "2"},
        ),
    ],
)
def test_path_templates_match_one_segment_per_parameter(
    template: str, path: str, params: dict[str, str] | None
) -> None:
    match = compile_path(template).match(path)
    assert (match.groupdict() if match else None) == params
