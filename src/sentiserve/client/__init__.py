"""A Python client for the friendly API (``POST /v1/sentiment``), sync and async.

```python
from sentiserve.client import Client

with Client("http://127.0.0.1:8000", api_key=None) as client:
    print(client.classify("A gorgeous, heartfelt film.").label)
```

One text or many per call; an API key; a timeout per call (sent to the server as the
request's deadline too, so it drops work nobody waits for); retries with exponential
backoff and jitter on connection errors and on 503, honouring ``Retry-After``; typed
results; errors as the project's error types (``errors.ERROR_TABLE`` read backwards: a 400
is an :class:`~sentiserve.errors.InvalidInputError`, a 404 a
:class:`~sentiserve.errors.ModelNotFoundError`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from sentiserve.errors import (
    DeadlineExceededError,
    SentiserveError,
    UnavailableError,
    from_http_status,
)

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_AFTER_CAP_S = 10.0
"""The longest a ``Retry-After`` is honoured for, whatever the server says."""
Outcome = httpx.Response | httpx.TransportError | None
"""What one try came to: an answer, a transport error, or nothing yet (a pause)."""


@dataclass(frozen=True)
class Prediction:
    """One text's result: the label, its probability, and every label's probability; for
    a multi-label model also ``labels``, those at or above their thresholds."""

    label: str
    score: float
    scores: dict[str, float]
    labels: list[str] | None = None


@dataclass(frozen=True)
class Result:
    """One call's results, in text order, with the model version that answered."""

    model: str
    version: int
    predictions: list[Prediction]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of connection errors and 503s.

    Attributes:
        attempts: Tries in all (1: no retry).
        backoff_s: First wait; doubled each retry, with up to 50% random jitter.
        max_backoff_s: Longest wait between tries.
    """

    attempts: int = 4
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def wait(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before try ``attempt + 1``.

        ``Retry-After`` sets the base when the server sends one; jitter applies either way,
        so clients turned away together do not all come back in the same instant.
        """
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        if retry_after is not None:
            with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                base = min(max(float(retry_after), 0.0), RETRY_AFTER_CAP_S)
        return float(base * (1 + random.random() / 2))


class _Base:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
        model: str | None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.model = model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _body(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        model: str | None,
        timeout_s: float,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"texts": list(texts), "timeout_ms": max(1, int(timeout_s * 1000))}
        if pairs is not None:
            body["text_pairs"] = list(pairs)
        if model or self.model:
            body["model"] = model or self.model
        return body

    @staticmethod
    def _result(response: httpx.Response) -> Result:
        if response.status_code != 200:
            raise _error_of(response)
        doc = response.json()
        predictions = [
            Prediction(
                r["label"],
                float(r["score"]),
                {k: float(v) for k, v in r["scores"].items()},
                r.get("labels"),
            )
            for r in doc["results"]
        ]
        return Result(doc["model"], int(doc["version"]), predictions)

    def _tries(self, now: Callable[[], float]) -> Generator[float, Outcome, httpx.Response]:
        """The retry loop without its I/O, shared by both clients.

        Yields a positive number of seconds: send the request with that timeout, then send
        back the response or the transport error. Yields a negative number: sleep that
        long (negated), then send back None. Returns the final response (not a 503), or
        raises the error to give up with.
        """
        deadline = now() + self.timeout_s
        for attempt in range(self.retry.attempts):
            remaining = deadline - now()
            if remaining <= 0:
                break
            outcome = yield remaining
            if isinstance(outcome, httpx.TimeoutException):
                break
            if isinstance(outcome, httpx.Response) and outcome.status_code != 503:
                return outcome
            response = outcome if isinstance(outcome, httpx.Response) else None
            last = (
                _error_of(response)
                if response is not None
                else UnavailableError(f"cannot reach {self.url}: {outcome}")
            )
            if attempt + 1 >= self.retry.attempts:
                raise last
            retry_after = response.headers.get("retry-after") if response is not None else None
            pause = self.retry.wait(attempt, retry_after)
            if now() + pause >= deadline:
                raise last
            yield -pause
        raise _timed_out(self.timeout_s)


class Client(_Base):
    """The friendly API over HTTP, synchronously.

    Args:
        url: The server's base URL.
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout_s: Each call's deadline, retries included.
        retry: Retries of connection errors and 503s.
        model: The model name to ask for by default (None: the server's default model,
            ``sentiment`` or the only one it serves).
        transport: An httpx transport (tests, custom TLS).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        model: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout_s, retry, model)
        self._http = httpx.Client(headers=self.headers, transport=transport)

    def classify(
        self, text: str, *, text_pair: str | None = None, model: str | None = None
    ) -> Prediction:
        """The prediction for one text (or one pair, with ``text_pair``)."""
        pairs = None if text_pair is None else [text_pair]
        return self.classify_many([text], text_pairs=pairs, model=model).predictions[0]

    def classify_many(
        self,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        model: str | None = None,
    ) -> Result:
        """Predictions for several texts (or pairs, with ``text_pairs``), in order, from one
        request."""
        tries = self._tries(time.monotonic)
        outcome: Outcome = None
        try:
            while True:
                step = tries.send(outcome)
                outcome = None
                if step < 0:
                    time.sleep(-step)
                    continue
                try:
                    outcome = self._http.post(
                        f"{self.url}/v1/sentiment",
                        json=self._body(texts, text_pairs, model, step),
                        timeout=step,
                    )
                except httpx.TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return self._result(done.value)

    def ready(self) -> bool:
        """Whether the server is ready (``/v2/health/ready``)."""
        try:
            return self._http.get(f"{self.url}/v2/health/ready", timeout=self.timeout_s).is_success
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The friendly API over HTTP, for asyncio (same arguments as :class:`Client`)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        model: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout_s, retry, model)
        self._http = httpx.AsyncClient(headers=self.headers, transport=transport)

    async def classify(
        self, text: str, *, text_pair: str | None = None, model: str | None = None
    ) -> Prediction:
        """The prediction for one text (or one pair, with ``text_pair``)."""
        pairs = None if text_pair is None else [text_pair]
        return (await self.classify_many([text], text_pairs=pairs, model=model)).predictions[0]

    async def classify_many(
        self,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        model: str | None = None,
    ) -> Result:
        """Predictions for several texts (or pairs, with ``text_pairs``), in order, from one
        request."""
        tries = self._tries(asyncio.get_running_loop().time)
        outcome: Outcome = None
        try:
            while True:
                step = tries.send(outcome)
                outcome = None
                if step < 0:
                    await asyncio.sleep(-step)
                    continue
                try:
                    outcome = await self._http.post(
                        f"{self.url}/v1/sentiment",
                        json=self._body(texts, text_pairs, model, step),
                        timeout=step,
                    )
                except httpx.TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return self._result(done.value)

    async def ready(self) -> bool:
        """Whether the server is ready (``/v2/health/ready``)."""
        try:
            response = await self._http.get(f"{self.url}/v2/health/ready", timeout=self.timeout_s)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _error_of(response: httpx.Response) -> SentiserveError:
    """The error an error answer stands for (its ``{"error": ...}`` message kept)."""
    try:
        message = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    return from_http_status(response.status_code, message)


def _timed_out(timeout_s: float) -> SentiserveError:
    return DeadlineExceededError(f"no answer within {timeout_s:g} s")


__all__ = ["AsyncClient", "Client", "Prediction", "Result", "RetryPolicy"]
