"""Closed and open loops. Both are bounded in time and in count, and stop by themselves.

- Closed loop: ``concurrency`` workers, each sends its next request as soon as the last one
  is answered (perf_analyzer's concurrency mode).
- Open loop: Poisson arrivals at ``rate`` per second, whatever the server does. Latency is
  counted from when a request was *due*, not when it was sent, so a slow server cannot hide
  its queue by slowing the client down (no coordinated omission).

Closed loop: a request counts when it *finishes* inside the measurement window (after
warm-up), so throughput is completions per second of the window, as perf_analyzer counts it;
requests still in flight when the window closes are waited for but not counted. Open loop:
a request counts when it was *due* inside the window, and every one of them is waited for
(up to the client's timeout), so a slow answer is never dropped from the latencies.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sentiserve.bench.protocols import Client, RequestFailed

Hook = Callable[[], Awaitable[None]]

MAX_IN_FLIGHT = 4096
"""Open loop: arrivals beyond this many outstanding requests are counted as ``client
overloaded`` instead of being sent (keeps the client's memory bounded)."""


@dataclass
class Sample:
    """What one load level measured."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    window_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def record(self, started: float, measuring: bool, failure: str | None) -> None:
        """One answer: latency from ``started``; counted only when ``measuring``."""
        if not measuring:
            return
        if failure is None:
            self.latencies_s.append(time.perf_counter() - started)
        else:
            self.errors[failure] += 1


async def _nothing() -> None:
    return None


async def _attempt(client: Client, index: int) -> str | None:
    try:
        await client.send(index)
    except RequestFailed as exc:
        return exc.kind
    return None


async def closed_loop(
    client: Client,
    concurrency: int,
    *,
    duration_s: float,
    warmup_s: float = 0.0,
    max_requests: int = 10_000_000,
    on_start: Hook = _nothing,
    on_end: Hook = _nothing,
) -> Sample:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    sample = Sample()
    counter = iter(range(max_requests))
    now = time.perf_counter()
    window_start = now + warmup_s
    window_end = window_start + duration_s

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            if started >= window_end:
                return
            failure = await _attempt(client, index)
            finished = time.perf_counter()
            sample.record(started, window_start <= finished < window_end, failure)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    if warmup_s > 0:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
    await on_start()
    await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
    await on_end()
    await asyncio.gather(*workers)
    sample.window_s = duration_s
    return sample


async def open_loop(
    client: Client,
    rate: float,
    *,
    duration_s: float,
    warmup_s: float = 0.0,
    seed: int = 0,
    on_start: Hook = _nothing,
    on_end: Hook = _nothing,
) -> Sample:
    if rate <= 0:
        raise ValueError("rate must be positive")
    sample = Sample()
    rng = random.Random(seed)
    start = time.perf_counter()
    window_start = start + warmup_s
    window_end = window_start + duration_s
    in_flight: set[asyncio.Task[None]] = set()
    started_window = warmup_s <= 0
    if started_window:
        await on_start()

    async def one(index: int, due: float) -> None:
        failure = await _attempt(client, index)
        sample.record(due, due >= window_start, failure)

    due = start
    index = 0
    while True:
        due += rng.expovariate(rate)
        if due >= window_end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not started_window and due >= window_start:
            started_window = True
            await on_start()
        if len(in_flight) >= MAX_IN_FLIGHT:
            if due >= window_start:
                sample.errors["client overloaded"] += 1
            continue
        task = asyncio.create_task(one(index, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        index += 1
    if in_flight:
        await asyncio.gather(*in_flight)
    sample.window_s = duration_s
    if not started_window:
        await on_start()
    await on_end()
    return sample
