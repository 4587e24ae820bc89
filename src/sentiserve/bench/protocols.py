"""How one request is sent: the friendly v1 REST API, KServe v2 REST, or KServe v2 gRPC.

Request bodies are encoded once, before the clock starts, so the client spends its CPU on
sending rather than on JSON: on a 2-core machine the client shares the cores with the server.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from sentiserve.errors import ConfigError

PROTOCOLS = ("v1", "v2-http", "v2-grpc")


class RequestFailed(Exception):
    """One request failed; ``kind`` is what the report counts (``http 503``, ``grpc
    UNAVAILABLE``, ``timeout``, ``connection``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Client(Protocol):
    async def send(self, index: int) -> None:
        """Send text ``index`` and wait for a successful answer, else raise RequestFailed."""

    async def close(self) -> None: ...


def http_base(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r}: expected http://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}"


def grpc_target(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"grpc://{url}")
    if not parts.hostname or not parts.port:
        raise ConfigError(f"--url {url!r}: expected HOST:PORT (or grpc://HOST:PORT)")
    return f"{parts.hostname}:{parts.port}"


class _HttpClient:
    def __init__(
        self, url: str, bodies: list[bytes], timeout_s: float, headers: dict[str, str]
    ) -> None:
        import aiohttp

        self._url = url
        self._bodies = bodies
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            headers={"Content-Type": "application/json", **headers},
        )

    async def send(self, index: int) -> None:
        import aiohttp

        try:
            async with self._session.post(
                self._url, data=self._bodies[index % len(self._bodies)], timeout=self._timeout
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RequestFailed(f"http {response.status}")
        except TimeoutError as exc:
            raise RequestFailed("timeout") from exc
        except aiohttp.ClientError as exc:
            raise RequestFailed("connection") from exc

    async def close(self) -> None:
        await self._session.close()


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def http_request(protocol: str, model: str, texts: Sequence[str]) -> tuple[str, list[bytes]]:
    """The URL path and the JSON bodies (one text each) of an HTTP protocol's requests; the
    aiohttp client and the wrk runner send the same bytes."""
    if protocol == "v1":
        return "/v1/sentiment", [json.dumps({"text": t, "model": model}).encode() for t in texts]
    if protocol == "v2-http":

        def body(text: str) -> bytes:
            tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [text]}
            return json.dumps({"inputs": [tensor]}).encode()

        return f"/v2/models/{model}/infer", [body(t) for t in texts]
    raise ConfigError(f"protocol {protocol!r} is not an HTTP protocol (v1, v2-http)")


def http_client(
    protocol: str,
    url: str,
    model: str,
    texts: Sequence[str],
    timeout_s: float,
    api_key: str | None = None,
) -> _HttpClient:
    path, bodies = http_request(protocol, model, texts)
    return _HttpClient(f"{http_base(url)}{path}", bodies, timeout_s, _auth(api_key))


class _GrpcClient:
    def __init__(
        self, url: str, model: str, texts: Sequence[str], timeout_s: float, api_key: str | None
    ) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        self._grpc = grpc
        self._channel = grpc.aio.insecure_channel(
            grpc_target(url),
            options=[
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        self._stub: Any = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._timeout = timeout_s
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._requests = []
        for text in texts:
            raw = text.encode()
            request = pb.ModelInferRequest(model_name=model)
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = "TEXT", "BYTES"
            tensor.shape.extend((1, 1))  # [batch, 1]: Triton's batched TEXT input
            request.raw_input_contents.append(struct.pack("<I", len(raw)) + raw)
            self._requests.append(request)

    async def send(self, index: int) -> None:
        try:
            await self._stub.ModelInfer(
                self._requests[index % len(self._requests)],
                timeout=self._timeout,
                metadata=self._metadata,
            )
        except self._grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RequestFailed("timeout") from exc
            raise RequestFailed(f"grpc {code.name}") from exc

    async def close(self) -> None:
        await self._channel.close()


def make_client(
    protocol: str,
    url: str,
    model: str,
    texts: Sequence[str],
    timeout_s: float = 30.0,
    api_key: str | None = None,
) -> Client:
    if protocol in ("v1", "v2-http"):
        return http_client(protocol, url, model, texts, timeout_s, api_key)
    if protocol == "v2-grpc":
        return _GrpcClient(url, model, texts, timeout_s, api_key)
    raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
