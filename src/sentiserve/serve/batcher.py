"""Length-aware dynamic batching.

Requests arrive already tokenized, so each sequence's length is known. A dedicated worker
thread owns the engine: it cuts a batch when ``max_batch_size`` sequences wait, when the
oldest has waited ``max_queue_delay_ms`` (0 by default: run as soon as the engine is free),
or when adding more would pass the token budget or the padding budget.
Sequences of similar length are batched together around the oldest waiting one (so nobody
starves), and each batch is padded to its own longest sequence. While the engine runs, new
requests queue up and the next batch forms. The queue is bounded: past ``max_queue_size``
waiting sequences, new work is refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import numpy as np
import numpy.typing as npt

from sentiserve.engine.base import Engine
from sentiserve.engine.tokenizer import Tokenizer
from sentiserve.errors import ConfigError, SentiserveError

logger = logging.getLogger(__name__)


class QueueFullError(SentiserveError):
    """The batcher's queue is full; the client should retry later."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    retry_after_s = 1


class DeadlineExceededError(SentiserveError):
    """A request's deadline passed before its batch ran."""

    status = HTTPStatus.GATEWAY_TIMEOUT


class ShuttingDownError(SentiserveError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


@dataclass(frozen=True)
class BatchingConfig:
    """How batches are cut.

    Attributes:
        max_batch_size: Most sequences in one engine call.
        max_batch_tokens: Most padded tokens (batch size x longest sequence) in one call.
        max_queue_delay_ms: Longest the oldest waiting sequence waits for company.
        max_queue_size: Most sequences waiting; beyond it new requests are refused.
        group_by_length: Batch similar lengths together (off: arrival order).
        max_padding: With grouping, the most share of a batch's padded tokens that may be
            padding. On CPU one more sequence in a call saves little, while padding costs
            as much as real tokens, so a batch stops growing when it would pad more.
        pad_to_multiple: Round each batch's padded length up to a multiple of this.
    """

    max_batch_size: int = 32
    max_batch_tokens: int = 2048
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 512
    group_by_length: bool = True
    max_padding: float = 0.2
    pad_to_multiple: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.max_batch_tokens < 1:
            raise ConfigError("max_batch_tokens must be >= 1")
        if self.max_queue_delay_ms < 0:
            raise ConfigError("max_queue_delay_ms must be >= 0")
        if self.max_queue_size < self.max_batch_size:
            raise ConfigError("max_queue_size must be >= max_batch_size")
        if not 0 <= self.max_padding <= 1:
            raise ConfigError("max_padding must be between 0 and 1")
        if self.pad_to_multiple < 1:
            raise ConfigError("pad_to_multiple must be >= 1")


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


def select(lengths: Sequence[int], anchor: int, config: BatchingConfig) -> list[int]:
    """Indices of the sequences to batch with ``anchor`` (the oldest waiting one).

    With length grouping, the batch grows from the anchor towards whichever neighbour in
    length order is closer in length, while size and token budget allow. Without it, the
    batch takes sequences in arrival order (indices are in arrival order).
    """

    def fits(count: int, longest: int) -> bool:
        return count <= config.max_batch_size and count * longest <= config.max_batch_tokens

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
            padded - real - lengths[candidate] > config.max_padding * padded
        ):
            break
        real += lengths[candidate]
        if candidate == left:
            lo -= 1
        else:
            hi += 1
        longest = new_longest
    return order[lo : hi + 1]


class Batcher:
    """Owns one engine; turns concurrent requests into padded, length-grouped batches.

    Args:
        engine: Called from the batcher's worker thread only.
        tokenizer: Pads batches (to the longest, rounded to ``pad_to_multiple``).
        config: Batching limits.
        on_batch: Called from the worker thread after each engine call (metrics).
    """

    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        config: BatchingConfig,
        on_batch: Callable[[BatchStats], None] = lambda _s: None,
        name: str = "batcher",
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.config = config
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        self._running = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._running = True
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._thread.join(timeout)

    async def infer(
        self, sequences: Sequence[Sequence[int]], deadline: float
    ) -> npt.NDArray[np.float32]:
        """Logits for each sequence (token ids), in order.

        Args:
            deadline: ``time.monotonic()`` value after which unrun work is dropped.

        Raises:
            QueueFullError: More than ``max_queue_size`` sequences would be waiting.
            DeadlineExceededError: The deadline passed before the sequences ran.
        """
        loop = asyncio.get_running_loop()
        items = [_Item(ids, loop.create_future(), loop, deadline) for ids in sequences]
        with self._cond:
            if not self._running:
                raise ShuttingDownError("the server is shutting down")
            if len(self._pending) + len(items) > self.config.max_queue_size:
                raise QueueFullError(
                    f"server busy: {len(self._pending)} texts queued "
                    f"(limit {self.config.max_queue_size}); retry shortly"
                )
            self._pending.extend(items)
            self._cond.notify()
        try:
            results = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:
                item.future.cancel()
            raise
        return np.stack(results)

    def _next_batch(self) -> list[_Item] | None:
        """Wait for work, then cut a batch (under the lock). None when stopped and drained."""
        delay = self.config.max_queue_delay_ms / 1000
        while not self._pending:
            if not self._running:
                return None
            self._cond.wait()
        while self._running and len(self._pending) < self.config.max_batch_size:
            remaining = self._pending[0].enqueued + delay - time.monotonic()
            if remaining <= 0:
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
        chosen = set(select([len(i.ids) for i in live], 0, self.config))
        batch = [item for k, item in enumerate(live) if k in chosen]
        self._pending = [item for k, item in enumerate(live) if k not in chosen]
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        start = time.monotonic()
        queue_seconds = [start - item.enqueued for item in batch]
        try:
            padded = self.tokenizer.pad([i.ids for i in batch], self.config.pad_to_multiple)
            t_infer = time.monotonic()
            logits = self.engine.infer(padded.input_ids, padded.attention_mask)
            t_out = time.monotonic()
            rows = np.asarray(logits, dtype=np.float32)
        except Exception as exc:  # an engine failure fails this batch, not the server
            logger.exception("engine call failed for a batch of %d", len(batch))
            error = SentiserveError(f"inference failed: {type(exc).__name__}")
            _resolve_all([(item, error) for item in batch])
            return
        _resolve_all(list(zip(batch, rows, strict=True)))
        end = time.monotonic()
        self._on_batch(
            BatchStats(
                size=len(batch),
                padded_tokens=int(padded.input_ids.size),
                real_tokens=int(padded.attention_mask.sum()),
                queue_seconds=queue_seconds,
                input_seconds=t_infer - start,
                infer_seconds=t_out - t_infer,
                output_seconds=end - t_out,
            )
        )


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
