"""Gateway mode: the friendly API in front of a remote Triton, over gRPC.

``sentiserve serve --backend triton --triton-url HOST:8001`` keeps what the embedded server
does at the edge (API key, request limits, deadlines, the playground, request latency
metrics) and sends the texts to Triton's ``<model>`` (either Triton form: TEXT ``[n, 1]`` in,
LABEL and PROBABILITIES out). Triton tokenizes, applies the long-text policy, batches and
runs the model. Requests with more texts than the model's ``max_batch_size`` are cut into
chunks that run concurrently. The answers are the embedded server's.

Only ``sentiserve_request_duration_seconds`` and the overload counter are recorded here; the
``nv_*`` counters come from Triton itself, so Prometheus never counts a request twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np

from sentiserve.errors import ModelNotFoundError, SentiserveError
from sentiserve.repository.triton import LABELS
from sentiserve.serve.auth import ApiKey
from sentiserve.serve.batcher import DeadlineExceededError, QueueFullError
from sentiserve.serve.dataplane import Classification, InvalidInputError, Limits, check_texts
from sentiserve.serve.metrics import Metrics

MODEL_INFO_TTL_S = 30.0


class BackendUnavailableError(SentiserveError):
    """Triton cannot be reached, or it answered with an error that is not the client's."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class BadGatewayError(SentiserveError):
    """Triton answered, but not with what a sentiserve model answers."""

    status = HTTPStatus.BAD_GATEWAY


@dataclass(frozen=True)
class RemoteModel:
    """What the gateway needs to know about a Triton model (read from its config)."""

    name: str
    labels: list[str]
    max_batch_size: int
    fetched: float


def map_error(exc: Exception, what: str) -> SentiserveError:
    """A tritonclient error as the sentiserve error a client of the gateway should see."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = str(getattr(exc, "message", lambda: "")() or exc)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return DeadlineExceededError(f"{what}: deadline passed before Triton answered")
    if "UNAVAILABLE" in status:
        return BackendUnavailableError(f"{what}: Triton is unavailable: {message}")
    if "RESOURCE_EXHAUSTED" in status:
        return QueueFullError(f"{what}: Triton is overloaded: {message}")
    if "unknown model" in message or "NOT_FOUND" in status:
        return ModelNotFoundError(f"unknown model {what!r}")
    if "INVALID_ARGUMENT" in status:
        return InvalidInputError(f"{what}: {message}")
    return BackendUnavailableError(f"{what}: Triton failed: {status} {message}".strip())


class GatewayPlane:
    """The gateway's data plane: same ``classify`` as :class:`DataPlane`, backed by Triton.

    Args:
        url: Triton's gRPC endpoint, ``host:port``.
        metrics: Where request latencies go.
        limits: Per-request limits, enforced before anything reaches Triton.
        api_key: The API key, if one is required.
    """

    def __init__(self, url: str, metrics: Metrics, limits: Limits,
                 api_key: ApiKey | None = None) -> None:  # fmt: skip
        self.url = url
        self.metrics = metrics
        self.limits = limits
        self.api_key = api_key or ApiKey(None)
        self.accepting = True
        self._client: Any = None
        self._models: dict[str, RemoteModel] = {}

    def _triton(self) -> Any:
        if self._client is None:  # created on the event loop that uses it
            import tritonclient.grpc.aio as grpcclient

            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ready(self, model: str = "sentiment") -> bool:
        """Ready when accepting and Triton says ``model`` is ready."""
        if not self.accepting:
            return False
        try:
            return bool(await self._triton().is_model_ready(model))
        except Exception:  # unreachable Triton is "not ready", never a crash
            return False

    async def remote(self, name: str) -> RemoteModel:
        """``name``'s labels and batch limit, from Triton's model config (cached briefly)."""
        known = self._models.get(name)
        if known is not None and time.monotonic() - known.fetched < MODEL_INFO_TTL_S:
            return known
        try:
            config = (await self._triton().get_model_config(name, as_json=True))["config"]
        except Exception as exc:
            raise map_error(exc, name) from exc
        raw = config.get("parameters", {}).get(LABELS, {}).get("string_value")
        if not raw:
            raise BadGatewayError(f"Triton model {name!r} has no {LABELS} parameter; "
                                  "write it with `sentiserve repository form`")  # fmt: skip
        model = RemoteModel(name, list(json.loads(raw)), int(config.get("max_batch_size", 0)),
                            time.monotonic())  # fmt: skip
        self._models[name] = model
        return model

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        timeout_s: float | None = None,
    ) -> Classification:
        """Label and probabilities for each text, from Triton.

        Raises:
            SentiserveError: with the HTTP status the client gets.
        """
        start = time.monotonic()
        deadline = self.limits.deadline(timeout_s)
        checked = check_texts(list(texts), self.limits)
        model = await self.remote(model_name)
        size = model.max_batch_size or len(checked)
        chunks = [checked[i : i + size] for i in range(0, len(checked), size)]
        answers = await asyncio.gather(
            *(self._infer(model, chunk, version, deadline) for chunk in chunks)
        )
        probabilities = np.concatenate([a[1] for a in answers]).astype(np.float32)
        served_version = answers[0][0]
        elapsed = time.monotonic() - start
        self.metrics.request_latency.labels(model_name, str(served_version)).observe(elapsed)
        return Classification(model_name, served_version, model.labels, probabilities)

    async def _infer(
        self, model: RemoteModel, texts: list[str], version: int | None, deadline: float
    ) -> tuple[int, np.ndarray[Any, Any]]:
        import tritonclient.grpc.aio as grpcclient

        column = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
        tensor = grpcclient.InferInput("TEXT", list(column.shape), "BYTES")
        tensor.set_data_from_numpy(column)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"{model.name}: deadline passed before Triton was asked")
        try:
            result = await self._triton().infer(
                model.name, [tensor], model_version="" if version is None else str(version),
                outputs=[grpcclient.InferRequestedOutput("PROBABILITIES")],
                client_timeout=remaining,
            )  # fmt: skip
        except Exception as exc:
            raise map_error(exc, model.name) from exc
        probabilities = result.as_numpy("PROBABILITIES")
        if probabilities is None or probabilities.shape != (len(texts), len(model.labels)):
            got = None if probabilities is None else probabilities.shape
            raise BadGatewayError(f"{model.name}: Triton answered PROBABILITIES {got} for "
                                  f"{len(texts)} texts and {len(model.labels)} labels")  # fmt: skip
        return int(result.get_response().model_version or 0), probabilities


def health_router(plane: GatewayPlane, model: str) -> Any:
    """``/v2/health/live`` and ``/v2/health/ready`` (ready: Triton has ``model`` ready)."""
    from fastapi import APIRouter, Response

    api = APIRouter(tags=["health"])

    @api.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @api.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if await plane.ready(model) else 503)

    return api
