"""Connections that misbehave: hundreds of idle keep-alive connections, clients that send
headers or bodies a byte at a time. Other clients are still served within their deadlines;
idle connections are closed after the keep-alive timeout, slow bodies after the body
timeout (408, in the project's error format)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.serving import Running, start_server, stop


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(
        tiny_build / "model_repository", "--keep-alive-s", "2", "--body-timeout-s", "3"
    )
    yield running
    stop(running)


def connect(server: Running) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=30)


def read_response(s: socket.socket) -> bytes:
    """One whole HTTP response (headers and Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += s.recv(4096)
    return head + b"\r\n\r\n" + body


def request(body: bytes) -> bytes:
    return (
        b"POST /v1/sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def test_misbehaving_connections_do_not_stop_other_clients(server: Running) -> None:
    stop_trickling = threading.Event()
    idle: list[socket.socket] = []
    for _ in range(300):  # each served once, then left open and idle
        s = connect(server)
        s.sendall(request(b'{"text": "fine"}'))
        assert b"200 OK" in read_response(s)
        idle.append(s)

    def trickle(payload: bytes) -> None:
        s = connect(server)
        try:
            for byte in payload:
                if stop_trickling.wait(0.2):
                    return
                s.sendall(bytes([byte]))
        except OSError:
            return  # the server closed it: that is allowed
        finally:
            s.close()

    slow = request(b'{"text": "' + b"slow " * 40 + b'"}')
    trickles = [threading.Thread(target=trickle, args=(slow,)) for _ in range(40)]
    for t in trickles:
        t.start()
    try:
        latencies = []
        # One client for the well-behaved ones (each httpx.post would build its own: 40 ms
        # of CPU apiece, more than the request).
        client = httpx.Client(timeout=10)

        def normal(i: int) -> None:
            start = time.monotonic()
            r = client.post(f"{server.url}/v1/sentiment", json={"text": f"a good film {i}"})
            assert r.status_code == 200, r.text
            latencies.append(time.monotonic() - start)

        with client, ThreadPoolExecutor(8) as pool:
            list(pool.map(normal, range(400)))
        latencies.sort()
        assert latencies[int(len(latencies) * 0.99)] < 1.0, latencies[-5:]
    finally:
        stop_trickling.set()
        for t in trickles:
            t.join()
        for s in idle:
            s.close()


def test_idle_keep_alive_connections_are_closed(server: Running) -> None:
    s = connect(server)
    s.sendall(request(b'{"text": "fine"}'))
    assert b"200 OK" in read_response(s)
    s.settimeout(10)
    start = time.monotonic()
    assert s.recv(4096) == b"", "the server should close an idle connection"
    assert 1.5 < time.monotonic() - start < 6
    s.close()


def test_a_body_that_never_arrives_gets_408(server: Running) -> None:
    s = connect(server)
    head = request(b'{"text": "fine"}')
    s.sendall(head[:-5])  # headers and most of the body; the rest never comes
    s.settimeout(15)
    start = time.monotonic()
    answer = read_response(s)
    assert 2.5 < time.monotonic() - start < 10
    status, _, rest = answer.partition(b"\r\n")
    assert b"408" in status
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1]) == {
        "error": "the request body did not arrive within 3 s"
    }
    s.close()
