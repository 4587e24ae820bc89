"""S3 faults between the client and a real S3-compatible server: a fault-injecting HTTP
proxy started here sits between boto3 and moto_server and answers some requests with a
503, cuts response bodies short, or drops the connection. Transient faults are retried and
the result is verified byte for byte; persistent ones are one clear error and leave the
destination as it was. (The proxy is the one stand-in here: it is how a network fault is
caused on purpose; both ends are real.)"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentiserve.repository.stores import s3
from sentiserve.repository.stores.s3 import StoreError
from tests.integration.serving import free_port
from tests.integration.test_s3 import CREDENTIALS, Moto, _keys, leftovers, tree

Fault = Callable[[str, str, int], str]
"""(method, path, how many requests of this method and path came before) -> a fault:
"pass", "503", "truncate" or "drop"."""


@dataclass
class FaultProxy:
    upstream_port: int
    fault: Fault
    seen: dict[tuple[str, str], int] = field(default_factory=dict)
    injected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                key = (self.command, self.path.split("?")[0])
                with threading.Lock():
                    count = proxy.seen.get(key, 0)
                    proxy.seen[key] = count + 1
                fault = proxy.fault(self.command, key[1], count)
                if fault != "pass":
                    proxy.injected.append(f"{fault} {self.command} {key[1]}")
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = Moto()
    yield server
    server.stop()


@pytest.fixture
def published(moto: Moto, tmp_path: Path) -> tuple[str, Path]:
    import boto3

    boto3.client("s3", endpoint_url=moto.url, **_keys()).create_bucket(Bucket="faults")
    files = {f"sentiment/1/part{i}.bin": bytes([i]) * (50_000 + i) for i in range(4)}
    files["sentiment/config.pbtxt"] = b'name: "sentiment"\n'
    source = tree(files, tmp_path / "source")
    url = f"s3://faults/run-{tmp_path.name}"
    s3.publish(source, url, endpoint_url=moto.url)
    return url, source


def digests(folder: Path) -> dict[str, str]:
    """Every model file's sha256 (the manifest a pull keeps beside them left out)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != s3.MANIFEST
    }


def with_proxy(moto: Moto, fault: Fault) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto.port, fault)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("503 twice per object", lambda m, _p, n: "503" if m == "GET" and n < 2 else "pass"),
        (
            "bodies cut short once",
            lambda m, p, n: "truncate" if m == "GET" and n == 0 and ".bin" in p else "pass",
        ),
        ("connections dropped once", lambda m, _p, n: "drop" if m == "GET" and n == 0 else "pass"),
    ],
)
def test_transient_faults_are_retried_and_the_copy_verified(
    moto: Moto, published: tuple[str, Path], tmp_path: Path, name: str, fault: Fault
) -> None:
    url, source = published
    for proxy in with_proxy(moto, fault):
        dest = tmp_path / "dest"
        s3.pull(url, dest, endpoint_url=proxy.url)
        assert proxy.injected, f"{name}: no fault was injected"
    assert digests(dest) == digests(source)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize(
    "fault",
    [
        lambda m, p, _n: "503" if m == "GET" and ".bin" in p else "pass",
        lambda m, p, _n: "truncate" if m == "GET" and "part2" in p else "pass",
        lambda m, p, _n: "drop" if m == "GET" and "part3" in p else "pass",
    ],
    ids=["always 503", "always truncated", "always dropped"],
)
def test_persistent_faults_fail_cleanly_and_keep_the_old_copy(
    moto: Moto, published: tuple[str, Path], tmp_path: Path, fault: Fault
) -> None:
    url, _source = published
    dest = tree({"sentiment/1/old.bin": b"the serving copy"}, tmp_path / "dest")
    before = digests(dest)
    for proxy in with_proxy(moto, fault):
        with pytest.raises(StoreError) as caught:
            s3.pull(url, dest, endpoint_url=proxy.url)
        assert "\n" not in str(caught.value)
    assert digests(dest) == before, "a failed pull must leave the old copy as it was"
    assert not leftovers(tmp_path)


def test_publish_through_faults_is_complete_or_has_no_manifest(moto: Moto, tmp_path: Path) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=moto.url, **_keys())
    client.create_bucket(Bucket="faults-publish")
    source = tree({f"m/1/f{i}.bin": bytes([i]) * 30_000 for i in range(3)}, tmp_path / "src")

    def flaky(method: str, path: str, n: int) -> str:
        return "503" if method == "PUT" and n == 0 else "pass"

    for proxy in with_proxy(moto, flaky):
        s3.publish(source, "s3://faults-publish/ok", endpoint_url=proxy.url)
        assert any(i.startswith("503 PUT") for i in proxy.injected)
    s3.pull("s3://faults-publish/ok", tmp_path / "back", endpoint_url=moto.url)
    assert digests(tmp_path / "back") == digests(source)

    def broken(method: str, path: str, _n: int) -> str:
        return "503" if method == "PUT" and path.endswith("f2.bin") else "pass"

    for proxy in with_proxy(moto, broken):
        with pytest.raises(StoreError):
            s3.publish(source, "s3://faults-publish/half", endpoint_url=proxy.url)
    listed = client.list_objects_v2(Bucket="faults-publish", Prefix="half/").get("Contents", [])
    assert s3.MANIFEST not in {o["Key"].rsplit("/", 1)[-1] for o in listed}
    with pytest.raises(StoreError, match="has no SHA256SUMS.json"):
        s3.pull("s3://faults-publish/half", tmp_path / "never", endpoint_url=moto.url)
    assert not (tmp_path / "never").exists()
