"""Length-aware dynamic batching over one or more engine instances.

Requests arrive already tokenized, so each sequence's length is known. They wait in one
bounded queue. Each engine instance has its own worker thread; a worker that is free cuts a
batch from what is waiting and runs it, so instances run in parallel:

1. Wait for work. With ``max_queue_delay_ms`` > 0 the first worker to see work waits that
   long for company (0, the default, runs at once: batches still form while every instance
   is busy).
2. Drop what was cancelled or is past its deadline (the caller gets a 504).
3. Cut a batch around the oldest waiting sequence (so nobody starves): sequences of similar
   length (from the oldest ``batch_window`` when set), while the batch stays within
   ``max_batch_size``, the token budget and the padding budget, and within this worker's
   fair share of the queue (what is waiting divided by the free workers): on CPU a second
   instance running in parallel is worth far more than one more sequence in a call, so a
   short queue is spread over the free instances and only a deep one makes large batches.
4. Pad the batch to its own longest sequence and run it. If this is the only sequence
   waiting and every other instance is idle, run it on the *solo* engine instead when
   there is one: a session that uses all cores, for the lowest latency when the load is
   light (one call with two threads takes 3.2 ms where one thread takes 5.3 ms on the
   2-core machine, while under load one-thread instances side by side do 1.3x the work).
5. Hand the results back to the callers' event loops (one wake-up per loop per batch).

An engine failure fails only its batch's requests; the worker carries on. Past
``max_queue_size`` waiting sequences new work is refused at once. ``stop`` finishes what is
queued, then stops every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.errors import (
    ConfigError,
    DeadlineExceededError,
    QueueFullError,
    SentiserveError,
    UnavailableError,
)
from sentiserve.serve import tracing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """How batches are cut.

    Attributes:
        max_batch_size: Most sequences in one engine call.
        max_batch_tokens: Most padded tokens (batch size x longest sequence) in one call
            (a longer sequence still runs, alone). Per instance: with one-thread instances
            side by side, 512 ran as fast as 1,024 or 2,048 on rt and long texts and kept
            the peak memory of two instances at 335 MB (rt) and 375 MB (long) where 2,048
            took 383 and 554 MB.
        max_queue_delay_ms: Longest the oldest waiting sequence waits for company.
        max_queue_size: Most sequences waiting; beyond it new requests are refused.
        group_by_length: Batch similar lengths together (off: arrival order).
        max_padding_tokens: With grouping, the most padding tokens a batch may carry per
            sequence in it. A padded token costs as much as a real one, while one more
            sequence in a call saves only the call's fixed cost (about 0.8 ms at one thread
            for MiniLM, the compute of roughly ten tokens), so a batch grows only while its
            padding stays below a few tokens per sequence. Measured at 32 clients against
            the earlier rule (at most 20% of a batch's tokens padding): rt 591 -> 650
            req/s, long 89 -> 102.
        pad_to_multiple: Round each batch's padded length up to a multiple of this.
        batch_window: Cut each batch from this many of the oldest waiting sequences (0: all
            of them). Grouping by length lets newer sequences of a common length overtake
            an older one of a rare length until it is the oldest; a window bounds that
            overtaking, which shortens the latency tail under overload at some cost in
            throughput (measured, 2-core machine, rt texts, window 8 against all: p99 at 32
            clients 127-138 against 169-196 ms at 0.98x the throughput, at 128 clients
            423-460 against 679-851 ms at 0.92x, 0.85-0.86x in `make bench`; docs/serving.md).
    """

    max_batch_size: int = 32
    max_batch_tokens: int = 512
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 512
    group_by_length: bool = True
    max_padding_tokens: int = 4
    pad_to_multiple: int = 1
    batch_window: int = 0

    @classmethod
    def for_device(cls, device: str, **overrides: Any) -> BatchingConfig:
        """The defaults for ``device`` (``cpu`` or ``cuda``) with ``overrides`` (None values
        ignored). A GPU runs one instance that needs big batches to be busy: 128 texts and
        16,384 padded tokens per call, and padding is cheap there (8 tokens per text)."""
        defaults: dict[str, Any] = {}
        if device != "cpu":
            defaults = {
                "max_batch_size": 128,
                "max_batch_tokens": 16_384,
                "max_queue_size": 2048,
                "max_padding_tokens": 8,
            }
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**defaults, **given})

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.max_batch_tokens < 1:
            raise ConfigError("max_batch_tokens must be >= 1")
        if self.max_queue_delay_ms < 0:
            raise ConfigError("max_queue_delay_ms must be >= 0")
        if self.max_queue_size < self.max_batch_size:
            raise ConfigError("max_queue_size must be >= max_batch_size")
        if self.max_padding_tokens < 0:
            raise ConfigError("max_padding_tokens must be >= 0")
        if self.pad_to_multiple < 1:
            raise ConfigError("pad_to_multiple must be >= 1")
        if self.batch_window < 0:
            raise ConfigError("batch_window must be >= 0 (0: the whole queue)")


@dataclass(frozen=True)
class BatchStats:
    """What one engine call did, for metrics."""

    size: int
    padded_tokens: int
    real_tokens: int
    queue_seconds: list[float]
    input_seconds: float
    infer_seconds: float
    output_seconds: float


@dataclass
class _Item:
    ids: Sequence[int]
    future: asyncio.Future[npt.NDArray[np.float32]]
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    started: float = 0.0
    """When its batch began (padding) and ended: the request's trace spans."""
    finished: float = 0.0
    batch: tuple[int, int] = (0, 0)
    """Its batch's size and padded tokens."""


def select(
    lengths: Sequence[int], anchor: int, config: BatchingConfig, limit: int | None = None
) -> list[int]:
    """Indices of the sequences to batch with ``anchor`` (the oldest waiting one).

    With length grouping, the batch grows from the anchor towards whichever neighbour in
    length order is closer in length, while size and token budget allow. Without it, the
    batch takes sequences in arrival order (indices are in arrival order). ``limit`` caps
    the batch size below ``max_batch_size`` (a worker's fair share of the queue).
    """
    most = config.max_batch_size if limit is None else max(1, min(limit, config.max_batch_size))

    def fits(count: int, longest: int) -> bool:
        return count <= most and count * longest <= config.max_batch_tokens

    if not config.group_by_length:
        chosen = [anchor]
        longest = lengths[anchor]
        for i in range(len(lengths)):
            if i == anchor:
                continue
            if not fits(len(chosen) + 1, max(longest, lengths[i])):
                break
            chosen.append(i)
            longest = max(longest, lengths[i])
        return chosen
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pos = order.index(anchor)
    lo, hi = pos, pos
    longest = lengths[anchor]
    target = lengths[anchor]
    real = lengths[anchor]
    while True:
        left = order[lo - 1] if lo > 0 else None
        right = order[hi + 1] if hi + 1 < len(order) else None
        if left is None and right is None:
            break
        if right is None or (
            left is not None and target - lengths[left] <= lengths[right] - target
        ):
            candidate, new_longest = left, longest
        else:
            candidate, new_longest = right, max(longest, lengths[right])
        assert candidate is not None
        padded = (hi - lo + 2) * new_longest
        if not fits(hi - lo + 2, new_longest) or (
            padded - real - lengths[candidate] > config.max_padding_tokens * (hi - lo + 2)
        ):
            break
        real += lengths[candidate]
        if candidate == left:
            lo -= 1
        else:
            hi += 1
        longest = new_longest
    return order[lo : hi + 1]


def cut(lengths: Sequence[int], free: int, config: BatchingConfig) -> list[int]:
    """Indices of the batch a free worker takes from the waiting sequences (``lengths``, in
    arrival order), ``free`` workers being free, itself included: its fair share of what
    waits, around the oldest, from the oldest ``batch_window`` (all when 0)."""
    share = math.ceil(len(lengths) / max(1, free))
    window = config.batch_window or len(lengths)
    return select(lengths[:window], 0, config, limit=share)


class Batcher:
    """Turns concurrent requests into padded, length-grouped batches for its engines.

    Args:
        engines: One per instance; each is called from its own worker thread only.
        tokenizer: Pads batches (to the longest, rounded to ``pad_to_multiple``).
        config: Batching limits.
        on_batch: Called from a worker thread after each engine call (metrics).
        name: Prefix of the worker threads' names.
        solo: An engine that uses every core, for a lone sequence when every instance is
            idle (see the module docstring); None turns this off.
    """

    def __init__(
        self,
        engines: Sequence[Engine],
        tokenizer: Tokenizer,
        config: BatchingConfig,
        on_batch: Callable[[BatchStats], None] = lambda _s: None,
        name: str = "batcher",
        solo: Engine | None = None,
    ) -> None:
        if not engines:
            raise ConfigError("a batcher needs at least one engine instance")
        self.engines = list(engines)
        self.solo = solo
        self.tokenizer = tokenizer
        self.config = config
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        self._running = False
        self._busy = 0
        self._solo_busy = False
        self._threads = [
            threading.Thread(target=self._work, args=(engine,), name=f"{name}-{k}", daemon=True)
            for k, engine in enumerate(self.engines)
        ]

    def start(self) -> None:
        self._running = True
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Refuse new work from now on; what is queued still runs (``join`` waits for it)."""
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def join(self, timeout: float = 30.0) -> None:
        """Wait for every worker to finish the queue and stop."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop every worker thread."""
        self.close()
        self.join(timeout)

    async def infer(
        self, sequences: Sequence[Sequence[int]], deadline: float
    ) -> npt.NDArray[np.float32]:
        """Logits for each sequence (token ids), in order.

        Args:
            deadline: ``time.monotonic()`` value after which unrun work is dropped.

        Raises:
            QueueFullError: More than ``max_queue_size`` sequences would be waiting.
            DeadlineExceededError: The deadline passed before the sequences ran.
            UnavailableError: The batcher is stopping.
        """
        loop = asyncio.get_running_loop()
        items = [_Item(ids, loop.create_future(), loop, deadline) for ids in sequences]
        with self._cond:
            if not self._running:
                raise UnavailableError("the server is shutting down")
            if len(self._pending) + len(items) > self.config.max_queue_size:
                raise QueueFullError(
                    f"server busy: {len(self._pending)} texts queued "
                    f"(limit {self.config.max_queue_size}); retry shortly"
                )
            self._pending.extend(items)
            self._cond.notify(min(len(items), len(self.engines)))
        try:
            results = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:
                item.future.cancel()
            raise
        if tracing.traced():
            _trace(items)
        return np.stack(results)

    def _next_batch(self) -> list[_Item] | None:
        """Wait for work, then cut this worker's batch (under the lock). None when stopped
        and drained; empty when everything waiting had expired."""
        delay = self.config.max_queue_delay_ms / 1000
        while not self._pending:
            if not self._running:
                return None
            self._cond.wait()
        while self._running and len(self._pending) < self.config.max_batch_size:
            remaining = self._pending[0].enqueued + delay - time.monotonic()
            if remaining <= 0 or not self._pending:
                break
            self._cond.wait(remaining)
        now = time.monotonic()
        live: list[_Item] = []
        expired: list[Outcome] = []
        for item in self._pending:
            if item.future.cancelled():
                continue
            if item.deadline <= now:
                expired.append((item, DeadlineExceededError("deadline exceeded while queued")))
                continue
            live.append(item)
        _resolve_all(expired)
        self._pending = live
        if not live:
            return []
        free = len(self.engines) - self._busy  # this worker included
        chosen = set(cut([len(i.ids) for i in live], free, self.config))
        batch = [item for k, item in enumerate(live) if k in chosen]
        self._pending = [item for k, item in enumerate(live) if k not in chosen]
        if self._pending:
            self._cond.notify()  # more work: wake another free worker
        return batch

    def _work(self, engine: Engine) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
                solo = (
                    self.solo is not None
                    and len(batch) == 1
                    and not self._pending
                    and self._busy == 0
                    and not self._solo_busy
                )
                self._busy += 1
                self._solo_busy |= solo
            outcomes: list[Outcome] = []
            stats = None
            try:
                if batch:
                    outcomes, stats = self._run(batch, self.solo if solo and self.solo else engine)
            except Exception as exc:  # a failing worker fails its batch, never the others
                logger.exception("batch of %d failed", len(batch))
                outcomes = [(item, _internal(exc)) for item in batch]
            finally:
                # Free before the results go back: a caller answered now may send its next
                # request at once, and should find this instance (and the solo) free.
                with self._cond:
                    self._busy -= 1
                    if solo:
                        self._solo_busy = False
            _resolve_all(outcomes)
            if stats is not None:
                self._on_batch(stats)

    def _run(self, batch: list[_Item], engine: Engine) -> tuple[list[Outcome], BatchStats]:
        """Pad and run one batch; the outcomes to hand back, and what the call did."""
        start = time.monotonic()
        padded = self.tokenizer.pad([i.ids for i in batch], self.config.pad_to_multiple)
        t_infer = time.monotonic()
        rows = np.asarray(engine.infer(padded.input_ids, padded.attention_mask), np.float32)
        t_out = time.monotonic()
        outcomes: list[Outcome] = list(zip(batch, rows, strict=True))
        shape = (len(batch), int(padded.input_ids.size))
        for item in batch:
            item.started, item.finished, item.batch = start, t_out, shape
        stats = BatchStats(
            size=len(batch),
            padded_tokens=int(padded.input_ids.size),
            real_tokens=int(padded.attention_mask.sum()),
            queue_seconds=[start - item.enqueued for item in batch],
            input_seconds=t_infer - start,
            infer_seconds=t_out - t_infer,
            output_seconds=time.monotonic() - t_out,
        )
        return outcomes, stats


def _trace(items: list[_Item]) -> None:
    """The request's ``queue`` span (its first text's wait) and one ``inference`` span per
    batch its texts ran in."""
    first = min(items, key=lambda i: i.started)
    tracing.record("queue", first.enqueued, first.started, **{"sentiserve.texts": len(items)})
    batches = {(i.started, i.finished, i.batch) for i in items}
    for start, end, (size, tokens) in sorted(batches):
        attributes = {"sentiserve.batch_size": size, "sentiserve.batch_tokens": tokens}
        tracing.record("inference", start, end, **attributes)


def _internal(exc: Exception) -> SentiserveError:
    return SentiserveError(f"inference failed: {type(exc).__name__}")


Outcome = tuple[_Item, "npt.NDArray[np.float32] | BaseException"]


def _resolve_all(outcomes: list[Outcome]) -> None:
    """Hand results to their event loops: one wake-up per loop, not one per text."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)

    def apply(group: list[Outcome]) -> None:
        for item, value in group:
            if item.future.done():
                continue
            if isinstance(value, BaseException):
                item.future.set_exception(value)
            else:
                item.future.set_result(value)

    for loop, group in by_loop.items():
        # A closed event loop raises RuntimeError: nobody is waiting for the result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(apply, group)
