"""BentoML as its documentation sets it up for adaptive batching: a service with one worker
per core and a ``batchable`` API (``max_batch_size``, ``max_latency_ms``) on the shared
engine (engine.py). A batchable API takes a list, so each request is ``{"texts": [text]}``
on ``POST /v1/sentiment`` and BentoML's dispatcher merges requests into batches.

Settings come from the environment (``bentoml serve`` imports this module):
PEER_MODEL_REPOSITORY, PEER_WORKERS (2), PEER_THREADS (1), PEER_MAX_BATCH_SIZE (16),
PEER_MAX_LATENCY_MS (60000, BentoML's default). BentoML picks the batch wait itself (its
adaptive dispatcher); max_latency_ms is a budget past which it answers 503, not a wait.

Usage: cd benchmarks/peers && PEER_MODEL_REPOSITORY=DIR BENTOML_DO_NOT_TRACK=True
       ../../.peers/bentoml/bin/bentoml serve bentoml_service:Sentiment --port 9000
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
from engine import MODEL, Engine

REPOSITORY = os.environ.get("PEER_MODEL_REPOSITORY", "model_repository")
WORKERS = int(os.environ.get("PEER_WORKERS", "2"))
THREADS = int(os.environ.get("PEER_THREADS", "1"))
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "16"))
MAX_LATENCY_MS = int(os.environ.get("PEER_MAX_LATENCY_MS", "60000"))


@bentoml.service(workers=WORKERS, traffic={"timeout": 60})
class Sentiment:
    def __init__(self) -> None:
        self.engine = Engine(REPOSITORY, THREADS)

    @bentoml.api(
        route="/v1/sentiment",
        batchable=True,
        max_batch_size=MAX_BATCH_SIZE,
        max_latency_ms=MAX_LATENCY_MS,
    )
    def sentiment(self, texts: list[str]) -> list[dict[str, Any]]:
        return [
            {"model": MODEL, "version": self.engine.version, "results": [result]}
            for result in self.engine.classify(texts)
        ]
