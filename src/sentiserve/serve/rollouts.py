"""Serving several versions of a model: the weighted split and the shadow copy.

Both data planes use these, with the rollout their model's configuration holds
(:mod:`sentiserve.repository.rollout`): the embedded server's registry and the gateway,
which reads it from Triton's answer for the model's configuration.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sentiserve.repository.rollout import Rollout
from sentiserve.serve.metrics import Metrics
from sentiserve.serve.plane import Classification

logger = logging.getLogger(__name__)

SHADOW_IN_FLIGHT = 64
"""Shadow requests running at once, at most; beyond, copies are skipped (and counted)."""


class Split:
    """Picks the version of each request that names none, by weight.

    Smooth weighted round-robin (nginx's upstream algorithm): every run of ``sum(weights)``
    picks gives each version exactly its weight, interleaved (90/10: one request in ten to
    the canary, never ten in a row), with no randomness to make the shares drift.
    """

    def __init__(self, weights: Mapping[int, int]) -> None:
        if not weights or sum(weights.values()) <= 0:
            raise ValueError("a split needs a positive weight")
        self.weights = dict(weights)
        self._total = sum(self.weights.values())
        self._current = dict.fromkeys(self.weights, 0)
        self._only = next(iter(self.weights)) if len(self.weights) == 1 else None
        self._lock = threading.Lock()

    def pick(self) -> int:
        if self._only is not None:
            return self._only
        with self._lock:
            current = self._current
            for version, weight in self.weights.items():
                current[version] += weight
            chosen = max(current, key=current.__getitem__)
            current[chosen] -= self._total
            return chosen

    @property
    def primary(self) -> int:
        """The version with the largest weight (the newest of equals): what an unversioned
        metadata or model card request describes."""
        return max(self.weights, key=lambda v: (self.weights[v], v))


@dataclass
class _Route:
    rollout: Rollout
    split: Split | None
    """None: no split, the backend's own choice (the newest version it loaded)."""
    fetched: float


class Routes:
    """The gateway's view of each remote model's rollout, read from the configuration its
    backend reports; a model's split (and its place in the rotation) carries over while its
    rollout is unchanged."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}

    def update(self, name: str, config: dict[str, Any]) -> None:
        """``name``'s rollout from its configuration (Triton's JSON answer)."""
        rollout = Rollout.from_config(config)
        known = self._routes.get(name)
        if known is not None and known.rollout == rollout:
            known.fetched = time.monotonic()
            return
        weights = {v: w for v, w in rollout.split.items() if w > 0}
        self._routes[name] = _Route(rollout, Split(weights) if weights else None, time.monotonic())

    def fresh(self, name: str, ttl_s: float) -> bool:
        known = self._routes.get(name)
        return known is not None and time.monotonic() - known.fetched < ttl_s

    def pick(self, name: str, version: int | None) -> int | None:
        """The version a request goes to: the one it names, else the split's pick (None:
        the backend chooses)."""
        known = self._routes.get(name)
        if version is not None or known is None or known.split is None:
            return version
        return known.split.pick()

    def shadow(self, name: str) -> int | None:
        known = self._routes.get(name)
        return None if known is None else known.rollout.shadow


def compare(primary: Classification, shadow: Classification) -> tuple[list[bool], list[float]]:
    """Per text: whether the two answers give the same labels, and the largest |Δp| over
    the labels both versions have (none in common: 1.0)."""
    mine, theirs = primary.above_thresholds(), shadow.above_thresholds()
    if mine is None or theirs is None:
        agree = [a == b for a, b in zip(primary.predicted(), shadow.predicted(), strict=True)]
    else:
        agree = [set(a) == set(b) for a, b in zip(mine, theirs, strict=True)]
    common = [label for label in primary.labels if label in shadow.labels]
    if not common:
        return agree, [1.0] * len(agree)
    left = primary.probabilities[:, [primary.labels.index(x) for x in common]]
    right = shadow.probabilities[:, [shadow.labels.index(x) for x in common]]
    deltas: list[float] = np.abs(left - right).max(axis=1).tolist()
    return agree, deltas


class Shadows:
    """Copies of answered requests to a shadow version, run after the answer went out and
    never awaited by it; at most ``limit`` at once."""

    def __init__(self, metrics: Metrics, limit: int = SHADOW_IN_FLIGHT) -> None:
        self.metrics = metrics
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, primary: Classification, version: int, run: Callable[[], Awaitable[Classification]]
    ) -> None:
        """Run ``run`` (the same texts on shadow ``version``) and compare it with ``primary``."""
        if len(self._tasks) >= self.limit:
            self._skip(primary, version, "busy")
            return
        # A context of its own: the copy is no part of the request's trace or log record.
        task = asyncio.get_running_loop().create_task(
            self._compare(primary, version, run), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self, primary: Classification, version: int, run: Callable[[], Awaitable[Classification]]
    ) -> None:
        try:
            shadow = await run()
        except Exception as exc:  # a shadow never affects the answer, whatever it raises
            logger.warning("shadow %s v%d failed: %s", primary.model, version, exc)
            self._skip(primary, version, "error")
            return
        agree, deltas = compare(primary, shadow)
        key = (primary.model, str(primary.version), str(shadow.version))
        m = self.metrics
        for flag, count in ((True, sum(agree)), (False, len(agree) - sum(agree))):
            m.shadow_predictions.labels(*key, "true" if flag else "false").inc(count)
        histogram = m.shadow_delta.labels(*key)
        for delta in deltas:
            histogram.observe(delta)

    def _skip(self, primary: Classification, version: int, reason: str) -> None:
        key = (primary.model, str(primary.version), str(version), reason)
        self.metrics.shadow_skipped.labels(*key).inc()

    async def wait(self) -> None:
        """Until every shadow request started so far has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
