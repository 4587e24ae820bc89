"""The clients' one retry loop, without I/O: what it asks its driver to do (send with a
timeout, or pause) for each outcome, on a clock the test moves."""

from __future__ import annotations

import httpx
import pytest

from sentiserve.client import Client, RetryPolicy
from sentiserve.errors import DeadlineExceededError, QueueFullError, UnavailableError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def busy(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(503, json={"error": "busy"}, headers={"retry-after": retry_after})


def ok() -> httpx.Response:
    return httpx.Response(200, json={"model": "m", "version": 1, "results": []})


def client(attempts: int = 4, timeout_s: float = 10.0) -> Client:
    return Client("http://t", timeout_s=timeout_s, retry=RetryPolicy(attempts=attempts))


def test_a_503_pauses_for_retry_after_then_sends_with_what_is_left() -> None:
    clock = Clock()
    tries = client()._tries(clock)
    assert tries.send(None) == 10.0
    clock.t += 2
    pause = tries.send(busy("1"))
    assert -1.5 <= pause <= -1.0, "Retry-After is the base, jitter adds up to half"
    clock.t += -pause
    remaining = tries.send(None)
    assert remaining == pytest.approx(8.0 + pause)
    with pytest.raises(StopIteration) as done:
        tries.send(ok())
    assert done.value.value.status_code == 200


def test_other_errors_are_answers_not_retries() -> None:
    tries = client()._tries(Clock())
    tries.send(None)
    with pytest.raises(StopIteration) as done:
        tries.send(httpx.Response(400, json={"error": "bad"}))
    assert done.value.value.status_code == 400


def test_the_last_attempt_raises_the_last_error() -> None:
    clock = Clock()
    tries = client(attempts=2)._tries(clock)
    tries.send(None)
    pause = tries.send(httpx.ConnectError("refused"))
    assert pause < 0
    tries.send(None)
    with pytest.raises(QueueFullError, match="busy"):
        tries.send(busy())


def test_unreachable_is_unavailable_and_a_timeout_is_a_deadline() -> None:
    tries = client(attempts=1)._tries(Clock())
    tries.send(None)
    with pytest.raises(UnavailableError, match="cannot reach http://t"):
        tries.send(httpx.ConnectError("refused"))
    tries = client()._tries(Clock())
    tries.send(None)
    with pytest.raises(DeadlineExceededError, match="no answer within 10 s"):
        tries.send(httpx.ReadTimeout("slow"))


def test_a_pause_past_the_deadline_gives_up_at_once() -> None:
    clock = Clock()
    tries = client(timeout_s=1.0)._tries(clock)
    tries.send(None)
    clock.t += 0.9
    with pytest.raises(QueueFullError):
        tries.send(busy("5"))
