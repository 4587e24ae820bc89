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
from sentiserve.errors import (
    ConfigError,
    DeadlineExceededError,
    QueueFullError,
    SentiserveError,
    UnavailableError,
)
from sentiserve.serve.batcher import Batcher, BatchingConfig, BatchStats, cut, select


class RecordingEngine:
    """Logits from each row's real token count; records batch shapes and the thread that ran
    each; can be held at a gate to build a queue on purpose (``entered`` is set when a call
    reaches the gate), or made to fail."""

    name = "recording"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.threads: list[str] = []
        self.delay = delay
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def infer(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(10)
        self.shapes.append(input_ids.shape)
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("engine broke")
        n = attention_mask.sum(axis=1).astype(np.float32)
        return np.stack([n / 10, -n / 10], axis=1)


async def entered(engine: RecordingEngine) -> None:
    """Wait (off the loop) until ``engine`` has a call at its gate."""
    assert await asyncio.to_thread(engine.entered.wait, 10), "the engine was never called"


async def queued() -> None:
    """Let tasks just created run up to their first wait (they enqueue synchronously)."""
    await asyncio.sleep(0)


@pytest.fixture
def tokenizer(tiny_bert: Path) -> Tokenizer:
    return Tokenizer(tiny_bert / "tokenizer.json", max_length=128)


def seqs(*lengths: int) -> list[list[int]]:
    return [[2] + [10] * (n - 2) + [3] for n in lengths]


def test_select_groups_similar_lengths_around_the_oldest() -> None:
    config = BatchingConfig(max_batch_size=3, max_batch_tokens=10_000, max_queue_size=8)
    lengths = [20, 5, 100, 21, 6, 19]
    assert sorted(select(lengths, 0, config)) == [0, 3, 5]
    fifo = BatchingConfig(
        max_batch_size=3, max_batch_tokens=10_000, max_queue_size=8, group_by_length=False
    )
    assert select(lengths, 0, fifo) == [0, 1, 2]


def test_select_respects_the_token_budget() -> None:
    config = BatchingConfig(max_batch_size=32, max_batch_tokens=100, max_queue_size=64)
    chosen = select([30, 30, 30, 30, 10], 0, config)
    assert len(chosen) == 3  # 4 x 30 would be 120 padded tokens
    assert select([500], 0, config) == [0], "an oversize sequence still runs alone"


def test_select_stops_before_padding_passes_the_limit() -> None:
    lengths = [20, 22, 24, 40, 19, 60]
    tight = BatchingConfig(
        max_batch_size=32, max_batch_tokens=10_000, max_queue_size=64, max_padding_tokens=4
    )
    chosen = sorted(select(lengths, 0, tight))
    assert chosen == [0, 1, 2, 4], "40 would pad 5 x 40 - 125 = 75 tokens, over 4 per text"
    padded = len(chosen) * max(lengths[i] for i in chosen)
    assert padded - sum(lengths[i] for i in chosen) <= 4 * len(chosen)
    none = BatchingConfig(
        max_batch_size=32, max_batch_tokens=10_000, max_queue_size=64, max_padding_tokens=0
    )
    assert select([20, 20, 21, 20], 0, none) == [0, 1, 3], "equal lengths only"
    loose = BatchingConfig(
        max_batch_size=32, max_batch_tokens=10_000, max_queue_size=64, max_padding_tokens=100
    )
    assert sorted(select(lengths, 0, loose)) == list(range(6))


def test_the_window_bounds_how_far_newer_texts_overtake_older_ones() -> None:
    # The oldest is a rare length; eight newer texts share another. Without a window all of
    # those whose length fits go in the oldest's batch or wait; the texts beyond the window
    # cannot be taken, so an older text of the common length goes first.
    lengths = [40, 12, 12, 12, 12, 12, 12, 12, 12, 40, 40, 40]
    whole = BatchingConfig(max_batch_tokens=10_000)
    assert sorted(cut(lengths, 1, whole)) == [0, 9, 10, 11], "newest 40s join the oldest"
    windowed = BatchingConfig(max_batch_tokens=10_000, batch_window=4)
    assert cut(lengths, 1, windowed) == [0], "nothing in the oldest four matches it"
    # The fair share still applies inside the window: two free workers split what waits.
    assert len(cut([12] * 8, 2, BatchingConfig(batch_window=6))) == 4
    assert len(cut([12] * 8, 1, BatchingConfig(batch_window=6))) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_window": -1},
        {"max_padding_tokens": -1},
        {"max_batch_size": 0},
        {"max_queue_delay_ms": -1},
        {"max_queue_size": 4, "max_batch_size": 8},
        {"pad_to_multiple": 0},
        {"max_batch_tokens": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BatchingConfig(**kwargs)  # type: ignore[arg-type]


async def test_concurrent_requests_are_batched_and_answered_in_order(
    tokenizer: Tokenizer,
) -> None:
    engine = RecordingEngine()
    stats: list[BatchStats] = []
    batcher = Batcher(
        [engine], tokenizer, BatchingConfig(max_queue_delay_ms=20), on_batch=stats.append
    )
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
    batcher = Batcher([engine], tokenizer, config)
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        first = asyncio.ensure_future(batcher.infer(seqs(30), deadline))
        await entered(engine)  # the worker holds one batch; the rest queue behind it
        short = [asyncio.ensure_future(batcher.infer(seqs(4), deadline)) for _ in range(4)]
        long = [asyncio.ensure_future(batcher.infer(seqs(60), deadline)) for _ in range(4)]
        await queued()
        engine.gate.set()
        await first
        await asyncio.gather(*short, *long)
    finally:
        batcher.stop()
    assert sorted(engine.shapes[1:]) == [(4, 4), (4, 60)]


async def test_full_queue_fails_fast(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    config = BatchingConfig(max_batch_size=2, max_queue_size=4, max_queue_delay_ms=0)
    batcher = Batcher([engine], tokenizer, config)
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        first = asyncio.ensure_future(batcher.infer(seqs(5, 5), deadline))
        await entered(engine)  # the worker holds the first batch at the gate
        waiting = asyncio.ensure_future(batcher.infer(seqs(5, 5, 5, 5), deadline))
        await queued()
        start = time.perf_counter()
        with pytest.raises(QueueFullError, match="limit 4"):
            await batcher.infer(seqs(5), deadline)
        assert time.perf_counter() - start < 0.05
        engine.gate.set()
        await asyncio.gather(first, waiting)
    finally:
        engine.gate.set()
        batcher.stop()


async def test_expired_requests_are_dropped_not_run(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8)
    batcher = Batcher([engine], tokenizer, config)
    batcher.start()
    try:
        running = asyncio.ensure_future(batcher.infer(seqs(5), time.monotonic() + 10))
        await entered(engine)
        doomed = asyncio.ensure_future(batcher.infer(seqs(7), time.monotonic() - 1))
        await queued()
        engine.gate.set()
        await running
        with pytest.raises(DeadlineExceededError):
            await doomed
    finally:
        engine.gate.set()
        batcher.stop()
    assert (1, 7) not in engine.shapes


async def test_stop_drains_the_queue(tokenizer: Tokenizer) -> None:
    engines = [RecordingEngine(), RecordingEngine()]
    for engine in engines:
        engine.gate.clear()
    config = BatchingConfig(max_batch_size=1, max_queue_size=8)
    batcher = Batcher(engines, tokenizer, config)
    batcher.start()
    deadline = time.monotonic() + 10
    pending = [asyncio.ensure_future(batcher.infer(seqs(5), deadline)) for _ in range(5)]
    for engine in engines:
        await entered(engine)  # both instances are busy, three texts wait
    batcher.close()
    with pytest.raises(UnavailableError, match="shutting down"):
        await batcher.infer(seqs(5), deadline)
    for engine in engines:
        engine.gate.set()
    await asyncio.to_thread(batcher.join)
    results = await asyncio.gather(*pending)
    assert len(results) == 5, "queued work was dropped instead of drained"
    assert sum(len(e.shapes) for e in engines) >= 5


async def test_instances_run_in_parallel_and_share_a_short_queue(tokenizer: Tokenizer) -> None:
    """Two texts and two idle instances: one text each, at the same time (fair share), not
    one batch of two on one instance."""
    engines = [RecordingEngine(), RecordingEngine()]
    for engine in engines:
        engine.gate.clear()
    batcher = Batcher(engines, tokenizer, BatchingConfig())
    batcher.start()
    try:
        work = asyncio.ensure_future(batcher.infer(seqs(5, 6), time.monotonic() + 10))
        for engine in engines:
            await entered(engine)  # both are inside their engine call at once
        for engine in engines:
            engine.gate.set()
        await work
    finally:
        batcher.stop()
    assert [e.shapes for e in engines] in ([[(1, 5)], [(1, 6)]], [[(1, 6)], [(1, 5)]])
    assert engines[0].threads[0] != engines[1].threads[0]


async def test_a_deep_queue_makes_length_grouped_batches(tokenizer: Tokenizer) -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    batcher = Batcher([engine], tokenizer, BatchingConfig(max_batch_size=8))
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        busy = asyncio.ensure_future(batcher.infer(seqs(9), deadline))
        await entered(engine)
        lengths = [10, 40, 11, 41, 12, 42, 13, 43]
        deep = asyncio.ensure_future(batcher.infer(seqs(*lengths), deadline))
        await queued()
        engine.gate.set()
        await asyncio.gather(busy, deep)
    finally:
        batcher.stop()
    assert engine.shapes[1:] == [(4, 13), (4, 43)], "grouped by length, oldest group first"


async def test_a_failing_instance_fails_its_batch_and_the_others_carry_on(
    tokenizer: Tokenizer,
) -> None:
    broken, good = RecordingEngine(delay=0.01, fail=True), RecordingEngine(delay=0.01)
    batcher = Batcher([broken, good], tokenizer, BatchingConfig(max_batch_size=1))
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        outcomes = await asyncio.gather(
            *(batcher.infer(seqs(5 + i % 7), deadline) for i in range(40)),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed, "the broken instance never got work"
        assert all(
            isinstance(f, SentiserveError) and "inference failed: RuntimeError" in str(f)
            for f in failed
        )
        assert len(failed) < len(outcomes), "the good instance answered nothing"
        # Both workers are still alive and serving after the failures.
        again = await asyncio.gather(
            *(batcher.infer(seqs(5), deadline) for _ in range(20)), return_exceptions=True
        )
        assert any(not isinstance(o, BaseException) for o in again)
        assert {t.split("-")[-1] for t in broken.threads + good.threads} == {"0", "1"}
    finally:
        batcher.stop()


async def test_a_lone_text_on_an_idle_server_runs_on_the_solo_engine(
    tokenizer: Tokenizer,
) -> None:
    engines, solo = [RecordingEngine(), RecordingEngine()], RecordingEngine()
    batcher = Batcher(engines, tokenizer, BatchingConfig(), solo=solo)
    batcher.start()
    try:
        deadline = time.monotonic() + 10
        for _ in range(5):
            await batcher.infer(seqs(7), deadline)
        assert len(solo.shapes) == 5
        assert not engines[0].shapes
        assert not engines[1].shapes
        # While the solo engine runs, another text goes to an instance, not to a queue.
        solo.gate.clear()
        solo.entered.clear()
        held = asyncio.ensure_future(batcher.infer(seqs(8), deadline))
        await entered(solo)
        beside = await batcher.infer(seqs(9), deadline)
        assert np.allclose(beside, [[0.9, -0.9]])
        assert [s for e in engines for s in e.shapes] == [(1, 9)]
        solo.gate.set()
        await held
    finally:
        for engine in (*engines, solo):
            engine.gate.set()
        batcher.stop()
    assert solo.shapes == [(1, 7)] * 5 + [(1, 8)]


def test_a_batcher_needs_an_engine(tokenizer: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="at least one engine"):
        Batcher([], tokenizer, BatchingConfig())
