"""The batcher: grouping, budgets, bounded queue, deadlines, ordering, invariance."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.errors import ConfigError
from sentiserve.serve.batcher import (
    Batcher,
    BatchingConfig,
    BatchStats,
    DeadlineExceededError,
    QueueFullError,
    select,
)


class RecordingEngine:
    """Logits from each row's real token count; records batch shapes; can be slowed or
    held (a gate) to build a queue on purpose."""

    name = "recording"

    def __init__(self, delay: float = 0.0) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        self.gate.wait(10)
        self.shapes.append(input_ids.shape)
        time.sleep(self.delay)
        n = attention_mask.sum(axis=1).astype(np.float32)
        return np.stack([n / 10, -n / 10], axis=1)


@pytest.fixture
def tokenizer(tiny_bert: Path) -> Tokenizer:
    return Tokenizer(tiny_bert / "tokenizer.json", max_length=128)


def seqs(*lengths: int) -> list[list[int]]:
    return [[2] + [10] * (n - 2) + [3] for n in lengths]


def test_select_groups_similar_lengths_around_the_oldest() -> None:
    config = BatchingConfig(max_batch_size=3, max_batch_tokens=10_000, max_queue_size=8)
    lengths = [20, 5, 100, 21, 6, 19]
    assert sorted(select(lengths, 0, config)) == [0, 3, 5]
    fifo = BatchingConfig(max_batch_size=3, max_batch_tokens=10_000, max_queue_size=8,
                          group_by_length=False)  # fmt: skip
    assert select(lengths, 0, fifo) == [0, 1, 2]


def test_select_respects_the_token_budget() -> None:
    config = BatchingConfig(max_batch_size=32, max_batch_tokens=100, max_queue_size=64)
    chosen = select([30, 30, 30, 30, 10], 0, config)
    assert len(chosen) == 3  # 4 x 30 would be 120 padded tokens
    assert select([500], 0, config) == [0], "an oversize sequence still runs alone"


def test_select_stops_before_padding_passes_the_limit() -> None:
    lengths = [20, 22, 24, 40, 19, 60]
    tight = BatchingConfig(max_batch_size=32, max_batch_tokens=10_000, max_queue_size=64,
                           max_padding=0.2)  # fmt: skip
    chosen = sorted(select(lengths, 0, tight))
    assert chosen == [0, 1, 2, 4], "40 would make 6 x 40 = 240 tokens, over a third padding"
    padded = len(chosen) * max(lengths[i] for i in chosen)
    assert padded - sum(lengths[i] for i in chosen) <= 0.2 * padded
    loose = BatchingConfig(max_batch_size=32, max_batch_tokens=10_000, max_queue_size=64,
                           max_padding=1.0)  # fmt: skip
    assert sorted(select(lengths, 0, loose)) == list(range(6))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_padding": 1.5},
        {"max_batch_size": 0},
        {"max_queue_delay_ms": -1},
        {"max_queue_size": 4, "max_batch_size": 8},
        {"pad_to_multiple": 0},
        {"max_batch_tokens": 0},
    ],  # fmt: skip
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BatchingConfig(**kwargs)  # type: ignore[arg-type]


async def test_concurrent_requests_are_batched_and_answered_in_order(
    tokenizer: Tokenizer,
) -> None:
    engine = RecordingEngine()
    stats: list[BatchStats] = []
    batcher = Batcher(engine, tokenizer, BatchingConfig(max_queue_delay_ms=20),
                      on_batch=stats.append)  # fmt: skip
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        requests = [seqs(5 + i, 40 - i) for i in range(10)]
        results = await asyncio.gather(*(batcher.infer(r, deadline) for r in requests))
    finally:
        batcher.stop()
    for request, logits in zip(requests, results, strict=True):
        expected = np.array([[len(s) / 10, -len(s) / 10] for s in request])
        assert np.allclose(logits, expected, atol=1e-6)
    assert len(engine.shapes) < 20, "requests were not batched"
    assert sum(s.size for s in stats) == 20
    assert all(s.padded_tokens >= s.real_tokens for s in stats)


async def test_padding_is_to_the_longest_in_each_batch(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    config = BatchingConfig(max_batch_size=4, max_queue_delay_ms=50, max_queue_size=16)
    batcher = Batcher(engine, tokenizer, config)
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        short = [asyncio.ensure_future(batcher.infer(seqs(4), deadline)) for _ in range(4)]
        long = [asyncio.ensure_future(batcher.infer(seqs(60), deadline)) for _ in range(4)]
        await asyncio.sleep(0.1)
        engine.gate.set()
        await asyncio.gather(*short, *long)
    finally:
        batcher.stop()
    assert sorted(engine.shapes) == [(4, 4), (4, 60)]


async def test_full_queue_fails_fast(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    config = BatchingConfig(max_batch_size=2, max_queue_size=4, max_queue_delay_ms=0)
    batcher = Batcher(engine, tokenizer, config)
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        first = asyncio.ensure_future(batcher.infer(seqs(5, 5), deadline))
        await asyncio.sleep(0.05)  # the worker holds the first batch at the gate
        queued = asyncio.ensure_future(batcher.infer(seqs(5, 5, 5, 5), deadline))
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(QueueFullError, match="limit 4"):
            await batcher.infer(seqs(5), deadline)
        assert time.perf_counter() - start < 0.05
        engine.gate.set()
        await asyncio.gather(first, queued)
    finally:
        engine.gate.set()
        batcher.stop()


async def test_expired_requests_are_dropped_not_run(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
    batcher = Batcher(engine, tokenizer, config)
    batcher.start()
    try:
        running = asyncio.ensure_future(batcher.infer(seqs(5), time.monotonic() + 10))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.infer(seqs(7), time.monotonic() + 0.05))
        await asyncio.sleep(0.1)
        engine.gate.set()
        await running
        with pytest.raises(DeadlineExceededError):
            await doomed
    finally:
        engine.gate.set()
        batcher.stop()
    assert (1, 7) not in engine.shapes


async def test_stop_drains_the_queue(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine(delay=0.02)
    batcher = Batcher(engine, tokenizer, BatchingConfig(max_batch_size=1, max_queue_size=8))
    batcher.start()
    deadline = time.monotonic() + 10
    pending = [asyncio.ensure_future(batcher.infer(seqs(5), deadline)) for _ in range(5)]
    await asyncio.sleep(0.01)
    await asyncio.to_thread(batcher.stop)
    results = await asyncio.gather(*pending)
    assert len(results) == 5
