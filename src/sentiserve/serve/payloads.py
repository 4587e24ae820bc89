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
comes after. ``sentiserve drift`` reads the files back (:func:`read_events`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from sentiserve.errors import ConfigError
from sentiserve.serve.policy import REQUEST_ID

if TYPE_CHECKING:
    from sentiserve.serve.metrics import Metrics
    from sentiserve.serve.plane import Classification

logger = logging.getLogger(__name__)

TICK_S = 0.1
"""How often the log's thread looks at what is pending."""
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


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


class Sink(Protocol):
    def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver a batch of structured CloudEvents; raise when it could not."""
        ...

    def close(self) -> None: ...


class HttpSink:
    """KServe's logger format: one POST per event, binary content mode (or with ``batch``,
    one POST per batch, batched content mode), over one kept-alive connection (the standard
    library's client: the least Python per event, which matters because this thread shares
    the interpreter with the server's event loop)."""

    def __init__(self, url: str, timeout_s: float = 5.0, batch: bool = False) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"payload log target {url!r} has no host")
        self.url = url
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._batch = batch
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(*self._address, timeout=self._timeout_s)
        return self._connection

    def _post(self, event: dict[str, Any]) -> None:
        headers = {
            f"ce-{k}": str(v)
            for k, v in event.items()
            if k not in ("data", "datacontenttype") and v is not None
        }
        headers["content-type"] = event["datacontenttype"]
        self._request(json.dumps(event["data"], separators=(",", ":")).encode(), headers)

    def _request(self, body: bytes, headers: dict[str, str]) -> None:
        connection = self._connect()
        try:
            connection.request("POST", self._path, body, headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._connection = None
            raise
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")

    def send(self, events: list[dict[str, Any]]) -> None:
        if self._batch:
            body = json.dumps(
                [{k: v for k, v in e.items() if v is not None} for e in events],
                separators=(",", ":"),
            ).encode()
            try:
                self._request(body, {"content-type": BATCH_CONTENT_TYPE})
            except (OSError, http.client.HTTPException) as exc:
                raise SinkError(len(events), f"{self.url} refused a batch: {exc}") from exc
            return
        failed = 0
        for event in events:
            try:
                self._post(event)
            except (OSError, http.client.HTTPException):
                failed += 1
        if failed:
            raise SinkError(failed, f"{self.url} refused {failed} of {len(events)} events")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class FolderSink:
    """JSON Lines files of structured CloudEvents, each written whole."""

    def __init__(self, folder: Path, format: str = "jsonl") -> None:  # noqa: A002
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot make the payload log folder {folder}: {exc}") from exc
        self._names = _file_names(format)
        self._encode = FORMATS[format]

    def send(self, events: list[dict[str, Any]]) -> None:
        name = next(self._names)
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(self._encode(events))
        os.replace(partial, self.folder / name)

    def close(self) -> None:
        pass


class S3Sink:
    """The same JSON Lines files as objects under an ``s3://`` prefix."""

    def __init__(self, url: str, format: str = "jsonl") -> None:  # noqa: A002
        from sentiserve.repository.stores.s3 import S3Url, client

        self.url = S3Url.parse(url)
        self._s3 = client(os.environ.get("AWS_ENDPOINT_URL") or None)
        self._names = _file_names(format)
        self._encode = FORMATS[format]

    def send(self, events: list[dict[str, Any]]) -> None:
        body = self._encode(events)
        self._s3.put_object(Bucket=self.url.bucket, Key=self.url.key(next(self._names)), Body=body)

    def close(self) -> None:
        pass


class SinkError(Exception):
    """Some events of a batch were not delivered (``lost`` of them)."""

    def __init__(self, lost: int, message: str) -> None:
        super().__init__(message)
        self.lost = lost


def _file_names(format: str = "jsonl") -> Iterator[str]:  # noqa: A002
    """payloads-<UTC time>-<host>-<pid>-<n>.<format>: sortable by time, unique per process."""
    host = socket.gethostname().replace("/", "_")
    n = 0
    while True:
        n += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        yield f"payloads-{stamp}-{host}-{os.getpid()}-{n:06d}.{format}"


def _jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)


def _parquet(events: list[dict[str, Any]]) -> bytes:
    """One row per event: each attribute a string column, ``data`` its JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({k for e in events for k in e})
    columns = {
        name: [
            None if name not in e else json.dumps(e[name]) if name == "data" else str(e[name])
            for e in events
        ]
        for name in names
    }
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


FORMATS = {"jsonl": _jsonl, "parquet": _parquet}
"""How a batch of events becomes a file (or an S3 object)."""


def open_sink(target: str, format: str = "jsonl", batch: bool = False) -> Sink:  # noqa: A002
    """The sink for ``target`` (see the module docstring)."""
    if target.startswith(("http://", "https://")):
        return HttpSink(target, batch=batch)
    if target.startswith("s3://"):
        return S3Sink(target, format)
    if "://" in target:
        raise ConfigError(
            f"payload log target {target!r}: expected http(s)://, s3://bucket/prefix or a folder"
        )
    return FolderSink(Path(target), format)


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


def read_events(paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """The events of payload log files (JSON Lines of structured CloudEvents, or Parquet); a
    folder means every ``*.jsonl`` and ``*.parquet`` file in it, in name (time) order.

    Raises:
        ConfigError: A file cannot be read or holds a line that is not a JSON object.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.jsonl"), *path.glob("*.parquet")], key=lambda p: p.name)
        else:
            files.append(path)
    for file in files:
        if file.suffix == ".parquet":
            yield from _parquet_events(file)
            continue
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the payload log {file}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file}:{number}: not a JSON event: {exc.msg}") from exc
            if not isinstance(event, dict):
                raise ConfigError(f"{file}:{number}: not a JSON object")
            yield event


def _parquet_events(file: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(file).to_pylist()
    except ImportError as exc:
        raise ConfigError("reading parquet payload logs needs pyarrow") from exc
    except Exception as exc:  # pyarrow's errors: not a Parquet file, truncated, ...
        raise ConfigError(f"cannot read the payload log {file}: {exc}") from exc
    for row in rows:
        event = {k: v for k, v in row.items() if v is not None}
        if "data" in event:
            event["data"] = json.loads(event["data"])
        yield event
