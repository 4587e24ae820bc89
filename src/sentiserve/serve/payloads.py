"""Payload logging: what sampled requests asked and were answered, kept off the request path.

Every classification API (friendly, TEI, vLLM, Hugging Face, KServe v2 over REST and gRPC)
ends in a plane's ``classify``; the plane hands each answer to :meth:`PayloadLog.record`,
which samples it and appends it to a bounded queue. Nothing else happens on the request's
path: a thread takes the answers off the queue, turns each into two CloudEvents in KServe's
logger format (type ``org.kubeflow.serving.inference.request`` and ``.response``, ``id`` the
request id, the client's ``X-Request-ID`` when it sent one) and sends them in batches to
the sink:

- ``http(s)://...``: each event POSTed in CloudEvents' binary content mode (``ce-*``
  headers, the data as the JSON body), as KServe's logger sends them; or, with ``batch``,
  each batch as one POST in CloudEvents' batched content mode (a JSON array of structured
  events, ``application/cloudevents-batch+json``), for receivers that take it;
- ``s3://bucket/prefix``: a JSON Lines object per batch (structured CloudEvents), through the
  repository's S3 client;
- a folder: the same JSON Lines files, written whole (a temporary name, then renamed).

When the queue is full (the sink is slow or down) new events are dropped, never waited for;
a batch the sink refused is dropped too. Both are counted in
``sentiserve_payload_events_dropped_total{reason}``; a sink that comes back receives what
comes after. The sinks, and the reader ``sentiserve drift`` uses to read the files back,
are in :mod:`sentiserve.serve.payload_sinks`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentiserve.errors import ConfigError
from sentiserve.serve.payload_sinks import FORMATS, Sink, SinkError, open_sink
from sentiserve.serve.policy import REQUEST_ID

if TYPE_CHECKING:
    from sentiserve.serve.metrics import Metrics
    from sentiserve.serve.plane import Classification

logger = logging.getLogger(__name__)

TICK_S = 0.1
"""How often the log's thread looks at what is pending."""
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


@dataclass(frozen=True)
class PayloadLogConfig:
    """Where and how much to log.

    Attributes:
        target: ``http(s)://`` URL, ``s3://bucket/prefix``, or a folder.
        sample: Share of requests logged (0..1).
        redact: Log each text's sha256 instead of the text.
        queue_size: Most events waiting for the sink; beyond, new ones are dropped.
        batch_events: Most events per sink call (one file or object per batch).
        flush_s: Longest an event waits for its batch to fill.
        format: Files and objects as ``jsonl`` (JSON Lines) or ``parquet`` (one row per
            event, ``data`` as a JSON string; needs pyarrow).
        batch: An http(s) sink gets each batch as one POST (CloudEvents' batched content
            mode) instead of one POST per event (KServe's logger).
    """

    target: str
    sample: float = 1.0
    redact: bool = False
    queue_size: int = 20_000
    batch_events: int = 1_000
    flush_s: float = 2.0
    format: str = "jsonl"
    batch: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ConfigError(f"payload log sample must be between 0 and 1; got {self.sample}")
        if not self.target:
            raise ConfigError("payload log target is empty")
        if self.format not in FORMATS:
            raise ConfigError(f"payload log format must be jsonl or parquet; got {self.format!r}")
        if self.format == "parquet":
            if self.target.startswith(("http://", "https://")):
                raise ConfigError("an http(s) sink receives CloudEvents; parquet is for files")
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError as exc:
                raise ConfigError(
                    "payload logs in parquet need pyarrow: pip install 'sentiserve[score]'"
                ) from exc


@dataclass(frozen=True)
class _Answer:
    """One answered request, as queued by the request (the events are built later)."""

    request_id: str
    time: float
    result: Classification
    texts: Sequence[str]
    pairs: Sequence[str] | None


class PayloadLog:
    """Samples answers into CloudEvents and ships them from a background thread."""

    def __init__(
        self,
        config: PayloadLogConfig,
        metrics: Metrics,
        sink: Sink | None = None,
        source: str | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.sink = (
            sink if sink is not None else open_sink(config.target, config.format, config.batch)
        )
        self.source = source or f"sentiserve/{socket.gethostname()}"
        # Two events per answer: up to queue_size events' worth of answers wait.
        self._pending: collections.deque[_Answer] = collections.deque()
        self._capacity = max(1, config.queue_size // 2)
        self._closing = threading.Event()
        self._random = random.Random()
        self._closed = False
        self._thread = threading.Thread(target=self._ship, name="payload-log", daemon=True)
        self._thread.start()

    def record(
        self,
        result: Classification,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
    ) -> None:
        """Log one answered request (when sampled). Never blocks and never raises: the
        request's part is to queue what it answered; the events are built and shipped by
        the log's thread."""
        if self.config.sample < 1.0 and self._random.random() >= self.config.sample:
            return
        if len(self._pending) >= self._capacity:
            self.metrics.payload_dropped.labels("queue_full").inc(2)
            return
        request_id = REQUEST_ID.get() or uuid.uuid4().hex
        # deque.append is atomic: no lock, no wake-up.
        self._pending.append(_Answer(request_id, time.time(), result, texts, pairs))

    def events(self, answer: _Answer) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request and response CloudEvents of one answer."""
        result = answer.result
        common = {
            "specversion": "1.0",
            "id": answer.request_id,
            "source": self.source,
            "time": datetime.fromtimestamp(answer.time, UTC).isoformat(),
            "datacontenttype": "application/json",
            "inferenceservicename": result.model,
            "modelversion": str(result.version),
            "endpoint": "sentiserve",
        }
        request: dict[str, Any] = {"texts": self._texts(answer.texts)}
        if answer.pairs is not None:
            request["text_pairs"] = self._texts(answer.pairs)
        above = result.above_thresholds()
        response = {
            "model": result.model,
            "version": result.version,
            "label_names": result.labels,
            "labels": above if above is not None else result.predicted(),
            "probabilities": result.probabilities.tolist(),
            "tokens": result.tokens,
            "truncated": result.truncated,
        }
        return (
            {**common, "type": REQUEST_TYPE, "data": request},
            {**common, "type": RESPONSE_TYPE, "data": response},
        )

    def _texts(self, texts: Sequence[str]) -> list[str]:
        if not self.config.redact:
            return list(texts)
        return ["sha256:" + hashlib.sha256(t.encode()).hexdigest() for t in texts]

    def _ship(self) -> None:
        """Every ``TICK_S`` (not on every answer: waking this thread per request would take
        the interpreter from the event loop each time), ship what is pending once a batch
        is full or the oldest has waited ``flush_s``; everything when closing."""
        with contextlib.suppress(OSError):  # the OS thread's name too, for top -H and /proc
            Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("payload-log")
        full = max(1, self.config.batch_events // 2)  # answers (two events each) per batch
        waited = 0.0
        while True:
            closing = self._closing.wait(TICK_S)
            waited += TICK_S
            pending = len(self._pending)
            if not closing and pending < full and (pending == 0 or waited < self.config.flush_s):
                continue
            waited = 0.0
            while self._pending:
                batch: list[dict[str, Any]] = []
                while self._pending and len(batch) < self.config.batch_events:
                    batch += self.events(self._pending.popleft())
                self._send(batch)
                if not closing and len(self._pending) < full:
                    break
            if closing:
                return

    def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.sink.send(batch)
        except SinkError as exc:
            self._lost(exc.lost, len(batch) - exc.lost, exc)
        except Exception as exc:  # noqa: BLE001 - a sink failure never reaches a request
            self._lost(len(batch), 0, exc)
        else:
            self.metrics.payload_sent.inc(len(batch))

    def _lost(self, lost: int, sent: int, exc: Exception) -> None:
        self.metrics.payload_dropped.labels("sink_error").inc(lost)
        self.metrics.payload_sent.inc(sent)
        logger.warning("payload log: %d events lost: %s", lost, exc)

    def close(self, timeout_s: float = 10.0) -> None:
        """Ship what is queued (waiting at most ``timeout_s``), then stop (once)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._thread.join(timeout_s)
        self.sink.close()
