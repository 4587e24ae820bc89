"""Gateway mode: the same data plane, backed by a remote Triton over gRPC.

``sentiserve serve --backend triton --triton-url HOST:8001`` keeps what the embedded server
does at the edge (API key, request limits, deadlines, the playground, request latency
metrics, every protocol: friendly REST, KServe v2 REST and gRPC) and hands the work to
Triton: the friendly API sends TEXT ``[n, 1]`` to Triton's ``<model>`` (either Triton form)
and reads LABEL and PROBABILITIES; KServe v2 operations are forwarded as they are. Triton
tokenizes, applies the long-text policy, batches and runs the model. Friendly requests with
more texts than the model's ``max_batch_size`` are cut into chunks that run concurrently.

Several Triton pods: ``--triton-url dns:///triton-headless:8001`` (a headless Service) or
``ipv4:10.0.0.1:8001,10.0.0.2:8001`` gives the gRPC channel every address, and the channel
spreads requests over them round-robin. A ClusterIP Service would not: kube-proxy balances
per TCP connection, and the gateway's one HTTP/2 connection would stay on one pod. The
channel is replaced every ``CHANNEL_REFRESH_S`` so that new pods (a scale-up) are resolved
too; gRPC re-resolves on its own only when a connection fails.

The gateway is ready unless it is draining (the policy's part): a Triton restart turns requests
into 503s with a clear message, but does not take every gateway out of its Service.
Triton's state is ``sentiserve_backend_ready`` (checked every ``BACKEND_CHECK_S``) for
dashboards and alerts.

Only ``sentiserve_request_duration_seconds``, the overload counter and the backend gauge are
recorded here; the ``nv_*`` counters come from Triton itself, so Prometheus never counts a
request twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sentiserve import DEFAULT_MODEL
from sentiserve.engine.tokenizer import Truncation
from sentiserve.errors import (
    BadGatewayError,
    DeadlineExceededError,
    InvalidInputError,
    ModelControlDisabledError,
    SentiserveError,
    UnavailableError,
    from_grpc_code,
)
from sentiserve.repository.triton_configs import LABELS, REFERENCE, THRESHOLDS
from sentiserve.serve import tracing
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.payloads import PayloadLog
from sentiserve.serve.plane import (
    Classification,
    InferRequest,
    InferResponse,
    Limits,
    ModelCard,
    ModelMetadata,
    ModelStatus,
    Tensor,
    TensorSpec,
    check_texts,
)
from sentiserve.serve.rollouts import Routes, Shadows

MODEL_INFO_TTL_S = 30.0
CHANNEL_REFRESH_S = 30.0
"""A new channel (a fresh DNS resolution) this often; the old one closes after a grace."""
CHANNEL_GRACE_S = 60.0
BACKEND_CHECK_S = 5.0
MAX_MESSAGE_BYTES = 2**31 - 1
T = TypeVar("T")


def channel_args() -> list[tuple[str, Any]]:
    """gRPC channel options: round-robin over every resolved address, keepalive so a dead
    pod is noticed, and no message size limit below Triton's."""
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True)
class RemoteModel:
    """What the gateway needs to know about a Triton model (read from its config)."""

    name: str
    labels: list[str]
    max_batch_size: int
    fetched: float
    thresholds: list[float] | None = None
    """A multi-label model's thresholds (its config's ``sentiserve_thresholds``)."""


def map_error(exc: Exception, what: str) -> SentiserveError:
    """A tritonclient error as the error a client of the gateway sees, through the one
    error table read backwards (``StatusCode.X`` -> the error gRPC code X stands for)."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = str(getattr(exc, "message", lambda: "")() or exc)
    code = status.removeprefix("StatusCode.")
    if not code or code == "UNAVAILABLE":
        return UnavailableError(f"{what}: Triton is unavailable: {message}")
    return from_grpc_code(code, f"{what}: {message}")


class TritonPlane:
    """The gateway's data plane (see the module docstring).

    Args:
        url: Triton's gRPC target: ``host:port``, ``dns:///host:port`` (every address the
            name resolves to) or ``ipv4:a:port,b:port``.
        metrics: Where request latencies go.
        limits: Per-request limits, enforced before anything reaches Triton.
        readiness_model: The Triton model whose readiness is this server's.
        model_control: Forward load and unload to Triton.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        limits: Limits,
        *,
        readiness_model: str = DEFAULT_MODEL,
        model_control: bool = False,
        payloads: PayloadLog | None = None,
    ) -> None:
        self.url = url
        self.payloads = payloads
        self.metrics = metrics
        metrics.backend_ready()  # exported from the start, 0 until the first check
        self.limits = limits
        self.readiness_model = readiness_model
        self.model_control = model_control
        self._client: Any = None
        self._created = 0.0
        self._retired: set[asyncio.Task[None]] = set()
        self._models: dict[str, RemoteModel] = {}
        self.routes = Routes()
        self.shadows = Shadows(metrics)
        self._checked = 0.0
        self._checking: asyncio.Task[None] | None = None

    def _triton(self) -> Any:
        """The client, created on the event loop that uses it and replaced every
        ``CHANNEL_REFRESH_S`` (the old one closes once its calls have had time to end)."""
        now = time.monotonic()
        if self._client is not None and now - self._created > CHANNEL_REFRESH_S:
            old, self._client = self._client, None
            task = asyncio.get_running_loop().create_task(_close_later(old, CHANNEL_GRACE_S))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        if self._client is None:
            import tritonclient.grpc.aio as grpcclient

            self._client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args())
            self._created = now
        return self._client

    async def _ask(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except SentiserveError:
            raise
        except Exception as exc:  # tritonclient raises its own exception type
            raise map_error(exc, what) from exc

    async def close(self) -> None:
        self.shadows.cancel()
        for task in list(self._retired):
            task.cancel()
        if self._checking is not None:
            self._checking.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.payloads is not None:
            await asyncio.to_thread(self.payloads.close)
            self.payloads = None

    # --- health and metadata ---

    def default_model(self) -> str:
        """The Triton model whose readiness is ours."""
        return self.readiness_model

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        """Always ready (see the module docstring); Triton's own readiness goes to
        ``sentiserve_backend_ready``, refreshed in the background at most every
        ``BACKEND_CHECK_S``, so this answers at once even when Triton is unreachable."""
        now = time.monotonic()
        if self._checking is None and now - self._checked >= BACKEND_CHECK_S:
            self._checked = now
            self._checking = asyncio.get_running_loop().create_task(self._check_backend())
        return True

    async def _check_backend(self) -> None:
        try:
            up = await self.model_ready(self.readiness_model)
            self.metrics.backend_ready().set(1 if up else 0)
        finally:
            self._checking = None

    async def model_ready(self, name: str, version: int | None = None) -> bool:
        try:
            call = self._triton().is_model_ready(
                name, _version(version), client_timeout=BACKEND_CHECK_S
            )
            return bool(await call)
        except Exception:  # unreachable Triton is "not ready", never a crash
            return False

    async def metadata(self, name: str, version: int | None = None) -> ModelMetadata:
        doc = await self._ask(
            name, self._triton().get_model_metadata(name, _version(version), as_json=True)
        )

        def specs(key: str) -> list[TensorSpec]:
            return [
                TensorSpec(t["name"], t["datatype"], [int(d) for d in t.get("shape", [])])
                for t in doc.get(key, [])
            ]

        return ModelMetadata(
            doc["name"],
            list(doc.get("versions", [])),
            doc.get("platform", ""),
            specs("inputs"),
            specs("outputs"),
        )

    async def model_config(self, name: str, version: int | None = None) -> Any:
        """Triton's own answer, forwarded."""
        response = await self._ask(
            name, self._triton().get_model_config(name, model_version=_version(version))
        )
        return response.config

    async def card(self, name: str) -> ModelCard:
        """From Triton's model config: the labels and the task (multi-label when it has
        thresholds); the version, length and policy are Triton's business (0 and None)."""
        model = await self.remote(name)
        return ModelCard(
            name,
            0,
            model.labels,
            "multi_label_classification" if model.thresholds else "single_label_classification",
            None,
            None,
            self.limits.max_texts,
        )

    async def remote(self, name: str) -> RemoteModel:
        """``name``'s labels and batch limit, from Triton's model config (cached briefly)."""
        known = self._models.get(name)
        if known is not None and time.monotonic() - known.fetched < MODEL_INFO_TTL_S:
            return known
        doc = await self._ask(name, self._triton().get_model_config(name, as_json=True))
        config = doc["config"]
        raw = config.get("parameters", {}).get(LABELS, {}).get("string_value")
        if not raw:
            raise BadGatewayError(
                f"Triton model {name!r} has no {LABELS} parameter; "
                "write it with `sentiserve repository form`"
            )
        parameters = config.get("parameters", {})
        thresholds = parameters.get(THRESHOLDS, {}).get("string_value")
        model = RemoteModel(
            name,
            list(json.loads(raw)),
            int(config.get("max_batch_size", 0)),
            time.monotonic(),
            [float(t) for t in json.loads(thresholds)] if thresholds else None,
        )
        # The drift baseline, if the version has one (refreshed with the config).
        reference = json.loads(parameters.get(REFERENCE, {}).get("string_value") or "{}")
        self.metrics.set_reference(name, int(reference.get("version", 0)), reference, lengths=False)
        self._models[name] = model
        self.routes.update(name, config)
        return model

    async def _refresh_route(self, name: str) -> None:
        """``name``'s rollout, refreshed like the model info (a model without labels, such
        as a raw member, too); when Triton does not answer, the inference says why."""
        if self.routes.fresh(name, MODEL_INFO_TTL_S):
            return
        with contextlib.suppress(SentiserveError):
            doc = await self._ask(name, self._triton().get_model_config(name, as_json=True))
            self.routes.update(name, doc["config"])

    # --- inference ---

    async def infer(self, request: InferRequest) -> InferResponse:
        """A KServe v2 inference, forwarded to Triton as it is."""
        import tritonclient.grpc.aio as grpcclient

        deadline = self.limits.deadline(request.timeout_s, request.transport_deadline_s)
        inputs = []
        for tensor in request.by_name().values():
            item = grpcclient.InferInput(tensor.name, list(tensor.shape), tensor.datatype)
            dtype = np.object_ if isinstance(tensor.data, list) else None
            item.set_data_from_numpy(np.asarray(tensor.data, dtype=dtype).reshape(tensor.shape))
            inputs.append(item)
        outputs = [grpcclient.InferRequestedOutput(n) for n in request.outputs] or None
        if request.version is None:
            await self._refresh_route(request.model)
        version = self.routes.pick(request.model, request.version)
        result = await self._call_infer(request.model, version, inputs, outputs, deadline)
        response = result.get_response()
        tensors = []
        for spec in response.outputs:
            array = result.as_numpy(spec.name)
            data: Any = array
            if spec.datatype == "BYTES":
                data = [bytes(x) for x in array.reshape(-1)]
            tensors.append(Tensor(spec.name, spec.datatype, [int(d) for d in spec.shape], data))
        version = int(response.model_version or 0)
        return InferResponse(request.model, version, tensors, request.id)

    async def _call_infer(
        self, model: str, version: int | None, inputs: list[Any], outputs: Any, deadline: float
    ) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"{model}: deadline passed before Triton was asked")
        with tracing.span("triton", kind=tracing.CLIENT, **{"sentiserve.model": model}):
            return await self._ask(
                model,
                self._triton().infer(
                    model,
                    inputs,
                    model_version=_version(version),
                    outputs=outputs,
                    client_timeout=remaining,
                    headers=tracing.headers() or None,
                ),
            )

    async def classify(
        self,
        model_name: str,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        version: int | None = None,
        timeout_s: float | None = None,
        truncation: Truncation | None = None,
        max_tokens: int | None = None,
    ) -> Classification:
        """Label and probabilities for each text (or pair: ``TEXT_PAIR``), from Triton.
        Triton tokenizes, so its model's long-text policy applies: a request that asks for
        another one is refused rather than silently served under a different policy.
        Token counts and logits are not available here (None in the result).

        Raises:
            SentiserveError: with the HTTP status the client gets.
        """
        if truncation is not None or max_tokens is not None:
            raise InvalidInputError(
                "a per-request truncation setting needs the embedded server; through Triton "
                "the model's own long-text policy applies (leave the truncation fields out)"
            )
        start = time.monotonic()
        deadline = self.limits.deadline(timeout_s)
        checked = check_texts(texts, self.limits)
        pairs = None if text_pairs is None else check_texts(text_pairs, self.limits, "text_pair")
        if pairs is not None and len(pairs) != len(checked):
            raise InvalidInputError(f"{len(checked)} texts but {len(pairs)} text pairs")
        model = await self.remote(model_name)
        chosen = self.routes.pick(model_name, version)
        result = await self._run(model, checked, pairs, chosen, deadline)
        elapsed = time.monotonic() - start
        self.metrics.request_latency.labels(model_name, str(result.version)).observe(elapsed)
        self.metrics.record_predictions(
            model_name, result.version, result.given(), result.top_scores()
        )
        if self.payloads is not None:
            self.payloads.record(result, checked, pairs)
        shadow = self.routes.shadow(model_name) if version is None else None
        if shadow is not None:

            async def run() -> Classification:
                late = self.limits.deadline()  # the default deadline, from when it starts
                return await self._run(model, checked, pairs, shadow, late)

            self.shadows.submit(result, shadow, run)
        return result

    async def _run(
        self,
        model: RemoteModel,
        checked: list[str],
        pairs: list[str] | None,
        version: int | None,
        deadline: float,
    ) -> Classification:
        """The texts through Triton's ``model``, in chunks of its batch limit at once."""
        size = model.max_batch_size or len(checked)
        starts = range(0, len(checked), size)
        answers = await asyncio.gather(
            *(
                self._classify(
                    model,
                    checked[i : i + size],
                    None if pairs is None else pairs[i : i + size],
                    version,
                    deadline,
                )
                for i in starts
            )
        )
        probabilities = np.concatenate([a[1] for a in answers]).astype(np.float32)
        return Classification(
            model.name, answers[0][0], model.labels, probabilities, model.thresholds
        )

    async def _classify(
        self,
        model: RemoteModel,
        texts: list[str],
        pairs: list[str] | None,
        version: int | None,
        deadline: float,
    ) -> tuple[int, np.ndarray[Any, Any]]:
        import tritonclient.grpc.aio as grpcclient

        tensors = []
        for name, column in (("TEXT", texts), ("TEXT_PAIR", pairs)):
            if column is None:
                continue
            array = np.array([t.encode() for t in column], dtype=np.object_).reshape(-1, 1)
            tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outputs = [grpcclient.InferRequestedOutput("PROBABILITIES")]
        result = await self._call_infer(model.name, version, tensors, outputs, deadline)
        probabilities = result.as_numpy("PROBABILITIES")
        if probabilities is None or probabilities.shape != (len(texts), len(model.labels)):
            got = None if probabilities is None else probabilities.shape
            raise BadGatewayError(
                f"{model.name}: Triton answered PROBABILITIES {got} for "
                f"{len(texts)} texts and {len(model.labels)} labels"
            )
        return int(result.get_response().model_version or 0), probabilities

    # --- repository and statistics ---

    async def index(self) -> list[ModelStatus]:
        doc = await self._ask("index", self._triton().get_model_repository_index(as_json=True))
        return [
            ModelStatus(
                m["name"],
                int(m["version"]) if m.get("version") else None,
                m.get("state", ""),
                m.get("reason", ""),
            )
            for m in doc.get("models", [])
        ]

    def _check_model_control(self) -> None:
        if not self.model_control:
            raise ModelControlDisabledError(
                "model control is off; start the gateway with --model-control to forward "
                "load and unload to Triton"
            )

    async def load(self, name: str) -> None:
        self._check_model_control()
        await self._ask(name, self._triton().load_model(name))
        self._models.pop(name, None)

    async def unload(self, name: str) -> None:
        self._check_model_control()
        await self._ask(name, self._triton().unload_model(name))
        self._models.pop(name, None)

    async def statistics(self, name: str | None, version: int | None = None) -> list[Any]:
        doc = await self._ask(
            name or "statistics",
            self._triton().get_inference_statistics(name or "", _version(version), as_json=True),
        )
        stats: list[Any] = doc.get("model_stats", [])
        return stats


def _version(version: int | None) -> str:
    return "" if version is None else str(version)


async def _close_later(client: Any, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await client.close()
