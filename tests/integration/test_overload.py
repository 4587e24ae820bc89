"""Overload: about 4x the sustainable load for 10 s, then back to normal.

Every answer must be a 200 or a fast 503/504, accepted requests finish within their deadline,
nothing is lost, resident memory stays flat, and throughput recovers within 5 s. Each
request carries 32 texts of the model's maximum length, so the engine (not the client, which
shares the machine) is what saturates.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.integration.serving import Running, start_server, stop

pytestmark = pytest.mark.serial

TEXTS_PER_REQUEST = 32
DEADLINE_MS = 2000
SURGE_S = 10.0
CALIBRATION_CLIENTS = 4
JSON = {"Content-Type": "application/json"}


@dataclass
class Outcome:
    status: int  # 0: no answer (connection error or client timeout)
    latency_s: float


@pytest.fixture(scope="module")
def server(tiny_build: Path) -> Iterator[Running]:
    running = start_server(
        tiny_build / "model_repository",
        "--max-queue-size",
        str(4 * TEXTS_PER_REQUEST),
        "--max-batch-size",
        str(TEXTS_PER_REQUEST),
        "--max-in-flight",
        "16",
    )
    yield running
    stop(running)


def body(rng: random.Random) -> bytes:
    words = ["good", "bad", "film", "plot", "actor", "boring", "great", "scene", "music"]
    texts = [" ".join(rng.choice(words) for _ in range(150)) for _ in range(TEXTS_PER_REQUEST)]
    return json.dumps({"texts": texts, "timeout_ms": DEADLINE_MS}).encode()


async def send(session: aiohttp.ClientSession, url: str, payload: bytes) -> Outcome:
    start = time.perf_counter()
    try:
        async with session.post(url, data=payload, headers=JSON) as response:
            await response.read()
            return Outcome(response.status, time.perf_counter() - start)
    except (aiohttp.ClientError, TimeoutError):
        return Outcome(0, time.perf_counter() - start)


async def closed(session: aiohttp.ClientSession, url: str, seconds: float) -> float:
    """Successful requests per second with CALIBRATION_CLIENTS clients."""
    rng = random.Random(1)
    payloads = [body(rng) for _ in range(8)]
    done = 0
    end = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        while time.perf_counter() < end:
            if (await send(session, url, payloads[k % len(payloads)])).status == 200:
                done += 1

    await asyncio.gather(*(client(k) for k in range(CALIBRATION_CLIENTS)))
    return done / seconds


async def surge(session: aiohttp.ClientSession, url: str, rate: float) -> list[Outcome]:
    """Poisson arrivals at ``rate`` for SURGE_S seconds; every request is waited for."""
    rng = random.Random(2)
    payloads = [body(rng) for _ in range(8)]
    tasks = []
    due = time.perf_counter()
    end = due + SURGE_S
    while True:
        due += rng.expovariate(rate)
        if due >= end:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(send(session, url, payloads[len(tasks) % 8])))
    return list(await asyncio.gather(*tasks))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def scenario(server: Running) -> dict[str, object]:
    url = f"{server.url}/v1/sentiment"
    timeout = aiohttp.ClientTimeout(total=DEADLINE_MS / 1000 + 10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        await closed(s, url, 2.0)  # warm-up
        capacity = await closed(s, url, 4.0)
        rss_before = rss_mb(server.proc.pid)
        outcomes = await surge(s, url, 4 * capacity)
        rss_after = rss_mb(server.proc.pid)
        recovered_at = None
        started = time.perf_counter()
        while time.perf_counter() - started < 5.0:
            if await closed(s, url, 1.0) >= 0.7 * capacity:
                recovered_at = time.perf_counter() - started
                break
    return {
        "capacity": capacity,
        "outcomes": outcomes,
        "rss": (rss_before, rss_after),
        "recovered_at": recovered_at,
    }


@pytest.mark.timeout(180)
def test_four_times_overload_is_refused_fast_and_recovers(server: Running) -> None:
    result = asyncio.run(scenario(server))
    capacity = result["capacity"]
    outcomes: list[Outcome] = result["outcomes"]  # type: ignore[assignment]
    assert capacity > 0
    by_status: dict[int, list[float]] = {}
    for outcome in outcomes:
        by_status.setdefault(outcome.status, []).append(outcome.latency_s)
    summary = {k: len(v) for k, v in by_status.items()}
    assert set(by_status) <= {200, 503, 504}, f"unexpected answers {summary}"
    assert 0 not in by_status, "a request got no answer"
    assert 503 in by_status, f"4x load was never refused: {summary} at capacity {capacity:.1f}/s"
    assert len(by_status[200]) >= 0.5 * capacity * SURGE_S, f"too few served: {summary}"
    rejected = sorted(by_status.get(503, []))
    p90, p99 = (rejected[int(q * (len(rejected) - 1))] for q in (0.90, 0.99))
    # Measured by a client that shares two saturated cores with the server: most refusals
    # take a few ms; the slowest 5-10% wait for a core (see docs/serving.md, Overload).
    assert p90 <= 0.050, f"503s should be immediate; p90 {p90 * 1000:.1f} ms"
    assert p99 <= 1.0, f"503s should be immediate; p99 {p99 * 1000:.1f} ms"
    slowest_ok = max(by_status[200])
    assert slowest_ok <= DEADLINE_MS / 1000 + 0.5, f"a 200 took {slowest_ok:.2f} s"
    before, after = result["rss"]  # type: ignore[misc]
    assert after - before < 64, f"resident memory grew {before:.0f} -> {after:.0f} MB"
    assert result["recovered_at"] is not None, "throughput did not recover within 5 s"
