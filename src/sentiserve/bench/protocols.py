"""How one request is sent: the friendly v1 REST API, KServe v2 REST, KServe v2 gRPC, or a
drop-in route for another server's clients (TEI's ``/predict``, vLLM's ``/v1/classify``).

Request bodies are encoded once, before the clock starts, so the client spends its CPU on
sending rather than on JSON: on a 2-core machine the client shares the cores with the server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from sentiserve.errors import ConfigError

PROTOCOLS = ("v1", "v2-http", "v2-grpc", "tei", "vllm")
HTTP_PROTOCOLS = ("v1", "v2-http", "tei", "vllm")


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


def groups(texts: Sequence[str], per_request: int) -> list[list[str]]:
    """The texts of each request: one each, or ``per_request`` consecutive texts (wrapping
    around), as many requests as there are texts."""
    if per_request < 1:
        raise ConfigError("texts per request must be >= 1")
    n = len(texts)
    return [[texts[(i + k) % n] for k in range(per_request)] for i in range(0, n, per_request)]


def http_request(
    protocol: str, model: str, texts: Sequence[str], per_request: int = 1
) -> tuple[str, list[bytes]]:
    """The URL path and the JSON bodies of an HTTP protocol's requests (``per_request``
    texts each); the aiohttp client and the wrk runner send the same bytes."""
    batches = groups(texts, per_request)
    if protocol == "v1":
        if per_request == 1:
            return "/v1/sentiment", [
                json.dumps({"text": b[0], "model": model}).encode() for b in batches
            ]
        return "/v1/sentiment", [json.dumps({"texts": b, "model": model}).encode() for b in batches]
    if protocol == "v2-http":

        def body(batch: list[str]) -> bytes:
            tensor = {"name": "TEXT", "datatype": "BYTES", "shape": [len(batch), 1], "data": batch}
            return json.dumps({"inputs": [tensor]}).encode()

        return f"/v2/models/{model}/infer", [body(b) for b in batches]
    if protocol == "tei":  # TEI serves one model: the server's default
        return "/predict", [
            json.dumps({"inputs": b[0] if per_request == 1 else [[t] for t in b]}).encode()
            for b in batches
        ]
    if protocol == "vllm":
        return "/v1/classify", [
            json.dumps({"input": b[0] if per_request == 1 else b, "model": model}).encode()
            for b in batches
        ]
    raise ConfigError(
        f"protocol {protocol!r} is not an HTTP protocol ({', '.join(HTTP_PROTOCOLS)})"
    )


def http_client(
    protocol: str,
    url: str,
    model: str,
    texts: Sequence[str],
    timeout_s: float,
    api_key: str | None = None,
    per_request: int = 1,
) -> _HttpClient:
    path, bodies = http_request(protocol, model, texts, per_request)
    return _HttpClient(f"{http_base(url)}{path}", bodies, timeout_s, _auth(api_key))


class _GrpcClient:
    def __init__(
        self,
        url: str,
        model: str,
        texts: Sequence[str],
        timeout_s: float,
        api_key: str | None,
        per_request: int = 1,
    ) -> None:
        import grpc
        import numpy as np
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc
        from tritonclient.utils import serialize_byte_tensor

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
        for batch in groups(texts, per_request):
            request = pb.ModelInferRequest(model_name=model)
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = "TEXT", "BYTES"
            tensor.shape.extend((len(batch), 1))  # [batch, 1]: Triton's batched TEXT input
            encoded = serialize_byte_tensor(np.array([t.encode() for t in batch], np.object_))
            request.raw_input_contents.append(bytes(encoded.item()))
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
    per_request: int = 1,
) -> Client:
    if protocol in HTTP_PROTOCOLS:
        return http_client(protocol, url, model, texts, timeout_s, api_key, per_request)
    if protocol == "v2-grpc":
        return _GrpcClient(url, model, texts, timeout_s, api_key, per_request)
    raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
